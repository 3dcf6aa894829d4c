//! Module compression, following the kernel: a module is compressed the way the kernel
//! compressed its own (`CONFIG_MODULE_COMPRESS_*`), because kmod and the kernel's
//! in-kernel decompressor only look for that one suffix.
//!
//! By default the work is done in-process with the settings the kernel's own
//! `make modules_install` uses, which are also dkms's defaults (zstd level 3 with a
//! checksum; xz preset 6 with a CRC32 check and a 1 MiB dictionary; gzip level 6). When a
//! user set `compress_*_opts` in framework.conf, those options mean command-line flags of
//! a particular tool, so that tool is run with them instead.
//!
//! The compressed file is written under a temporary name and renamed into place, so a
//! crash or a full disk never leaves a truncated `.ko.zst` that kmod would load.

use crate::exec::{Command, ExecError};
use crate::fs::{FsError, Root};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// xz at its highest settings compresses a few MB per second; a module of hundreds of
/// MB (some GPU drivers) still finishes well within this.
const TOOL_TIMEOUT: Duration = Duration::from_secs(900);

/// How the kernel compresses its modules, and so how ours must be compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Xz,
    Gzip,
}

impl Compression {
    /// What follows `.ko` in a compressed module's name (`""` for none).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
            Compression::Gzip => ".gz",
        }
    }

    /// The command-line tool that `compress_*_opts` are options of.
    fn tool(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some("zstd"),
            Compression::Xz => Some("xz"),
            Compression::Gzip => Some("gzip"),
        }
    }
}

/// Why a module could not be compressed. In every case but [`CompressError::RemoveOriginal`]
/// the uncompressed module is still there and no compressed file was left under the final
/// name, so the caller can fall back to installing the `.ko` as dkms does.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("{module} is not a path to a module file")]
    NotAFile { module: PathBuf },
    #[error("cannot read {module} to compress it: {source}")]
    Read {
        module: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {output}: {source}")]
    Write {
        output: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create a temporary directory in {dir} to compress in: {source}")]
    TempDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The tool named by the user's `compress_*_opts` failed; the source says how.
    #[error("compressing {module} with the configured options failed")]
    Tool {
        module: PathBuf,
        #[source]
        source: ExecError,
    },
    /// The tool exited 0 without writing `<file><suffix>`: options such as `--stdout`,
    /// `-o` or `--suffix` send the output elsewhere, where kmod would not find it.
    #[error(
        "`{command}` succeeded but did not write {expected}; check compress_*_opts for options \
         that change the output file (--stdout, -o, --suffix)"
    )]
    MissingOutput { command: String, expected: PathBuf },
    #[error(
        "compressed {module} to {output}, but cannot remove the uncompressed module: {source}"
    )]
    RemoveOriginal {
        module: PathBuf,
        output: PathBuf,
        #[source]
        source: FsError,
    },
    /// Writing or renaming the result into the tree failed (the error names the file).
    #[error(transparent)]
    Tree(#[from] FsError),
}

/// Compresses `module` to `<module><suffix>` next to it, removes the uncompressed file,
/// and returns the new path. [`Compression::None`] returns `module` untouched.
///
/// `user_options` are the matching `compress_*_opts`: when set (and not blank) the tool is
/// run with them, split on whitespace as bash splits dkms's unquoted expansion, plus `-f`
/// as dkms adds; otherwise the module is compressed in-process with the kernel's settings.
/// Fails when the module cannot be read, the output cannot be written, the tool fails or
/// writes elsewhere, or the uncompressed module cannot be removed afterwards.
pub fn compress(
    root: &Root,
    module: &Path,
    compression: Compression,
    user_options: Option<&str>,
) -> Result<PathBuf, CompressError> {
    if compression == Compression::None {
        return Ok(module.to_path_buf());
    }
    let Some(file_name) = module.file_name() else {
        return Err(CompressError::NotAFile {
            module: module.to_path_buf(),
        });
    };
    let mut output_name = file_name.to_os_string();
    output_name.push(compression.suffix());
    let output = module.with_file_name(&output_name);

    match user_options.filter(|o| !o.trim().is_empty()) {
        Some(options) => compress_with_tool(root, module, &output, compression, options)?,
        None => compress_in_process(root, module, &output, compression)?,
    }

    root.remove(module)
        .map_err(|source| CompressError::RemoveOriginal {
            module: module.to_path_buf(),
            output: output.clone(),
            source,
        })?;
    Ok(output)
}

/// Compresses with the crates in memory and writes the result through the tree's
/// handle (a temp name, fsynced, renamed, directory fsynced), giving it the module's
/// mode, as the tools do.
fn compress_in_process(
    root: &Root,
    module: &Path,
    output: &Path,
    compression: Compression,
) -> Result<(), CompressError> {
    let read_error = |source| CompressError::Read {
        module: module.to_path_buf(),
        source,
    };
    let write_error = |source| CompressError::Write {
        output: output.to_path_buf(),
        source,
    };
    // Modules are at most a few hundred MB; reading them whole keeps read and write
    // errors apart and tells zstd the size up front.
    let data = std::fs::read(root.full(module)).map_err(read_error)?;
    let mode = std::fs::metadata(root.full(module))
        .map_err(read_error)?
        .permissions()
        .mode();
    let compressed = encode(Vec::new(), &data, compression).map_err(write_error)?;
    Ok(root.write(output, &compressed, mode & 0o7777)?)
}

/// Writes `data` compressed into `out` and hands `out` back for committing.
fn encode<W: Write>(out: W, data: &[u8], compression: Compression) -> io::Result<W> {
    let mut encoder = Encoder::new(out, compression, u64::try_from(data.len()).ok())?;
    encoder.write_all(data)?;
    encoder.finish()
}

/// A stream compressed with the kernel's settings: the one place they are written down,
/// for modules and for tarballs alike.
pub(crate) enum Encoder<W: Write> {
    None(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(lzma_rust2::XzWriter<W>),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// `size` is the uncompressed size when known (zstd records it in the frame).
    pub(crate) fn new(out: W, compression: Compression, size: Option<u64>) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            Compression::Zstd => {
                // The zstd tool's defaults, which the kernel (`zstd -T0 --rm -f -q`) and
                // dkms (`-q --rm -T0`) use: level 3, content size and checksum in the frame.
                let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
                encoder.include_checksum(true)?;
                encoder.include_contentsize(size.is_some())?;
                encoder.set_pledged_src_size(size)?;
                Encoder::Zstd(encoder)
            }
            Compression::Xz => {
                // `xz --check=crc32 --lzma2=dict=1MiB`, as the kernel and dkms run it: the
                // in-kernel decompressor knows CRC32 but not xz's default CRC64, and a small
                // dictionary bounds the memory it needs. One block, as single-threaded xz.
                let mut options = lzma_rust2::XzOptions::with_preset(6);
                options.lzma_options.dict_size = 1 << 20;
                options.set_check_sum_type(lzma_rust2::CheckType::Crc32);
                Encoder::Xz(lzma_rust2::XzWriter::new(out, options)?)
            }
            // gzip's default level 6, without a name or timestamp (`gzip -n`, as the
            // kernel runs it), so rebuilding the same module gives the same bytes.
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .operating_system(3)
                    .write(out, flate2::Compression::new(6)),
            ),
        })
    }

    /// Ends the stream and hands `out` back.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(out) => Ok(out),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
            Encoder::Xz(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
            Encoder::Xz(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
        }
    }
}

/// What a stream's first bytes say it is compressed with; `Err` names a format that is
/// recognised but not read.
pub(crate) fn sniff(magic: &[u8]) -> Result<Compression, &'static str> {
    let formats: [(&[u8], Result<Compression, &'static str>); 7] = [
        (&[0x1f, 0x8b], Ok(Compression::Gzip)),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], Ok(Compression::Xz)),
        (&[0x28, 0xb5, 0x2f, 0xfd], Ok(Compression::Zstd)),
        (b"BZh", Err("bzip2")),
        (b"LZIP", Err("lzip")),
        (&[0x1f, 0x9d], Err("compress")),
        (&[0x5d, 0, 0], Err("lzma")),
    ];
    formats
        .into_iter()
        .find(|(prefix, _)| magic.starts_with(prefix))
        .map_or(Ok(Compression::None), |(_, format)| format)
}

/// Reads `input` decompressed; multi-member gzip streams are read to the end, as gzip does.
pub(crate) fn decoder<'a, R: io::BufRead + 'a>(
    input: R,
    compression: Compression,
) -> io::Result<Box<dyn io::Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(input, true)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    })
}

/// Runs `<tool> <options> -f -- <copy>` on a copy of the module in a private temporary
/// directory beside it, checks that `<copy><suffix>` appeared, and renames it into place.
/// Working on a copy means options such as zstd's `--rm` cannot remove the module
/// before we know compression worked.
fn compress_with_tool(
    root: &Root,
    module: &Path,
    output: &Path,
    compression: Compression,
    options: &str,
) -> Result<(), CompressError> {
    let Some(tool) = compression.tool() else {
        return Ok(());
    };
    let (Some(file_name), Some(output_name)) = (module.file_name(), output.file_name()) else {
        return Err(CompressError::NotAFile {
            module: module.to_path_buf(),
        });
    };
    let dir = match module.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The tool's private workspace, removed when dropped; only the result enters the
    // tree's real names, through the handle.
    let scratch = tempfile::Builder::new()
        .prefix(".dkms-compress-")
        .tempdir_in(root.full(dir))
        .map_err(|source| CompressError::TempDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    let copy = scratch.path().join(file_name);
    // std::fs::copy keeps the mode, and the tools give the output the input's mode.
    std::fs::copy(root.full(module), &copy).map_err(|source| CompressError::Read {
        module: module.to_path_buf(),
        source,
    })?;

    let command = Command::new(tool, "compress modules with the configured compress_*_opts")
        .args(options.split_whitespace())
        .arg("-f")
        .arg("--")
        // A bare name inside the scratch directory, so a relative module path still works.
        .arg(file_name)
        .dir(scratch.path())
        .timeout(TOOL_TIMEOUT);
    command.read().map_err(|source| CompressError::Tool {
        module: module.to_path_buf(),
        source,
    })?;

    let made = scratch.path().join(output_name);
    if !made.is_file() {
        return Err(CompressError::MissingOutput {
            command: command.display(),
            expected: output.to_path_buf(),
        });
    }
    let write_error = |source| CompressError::Write {
        output: output.to_path_buf(),
        source,
    };
    std::fs::File::open(&made)
        .and_then(|f| f.sync_all())
        .map_err(write_error)?;
    // The rename syncs the directory, so the result is durable once it has its name.
    // The scratch is named as `dir`'s child (tempfile may have made its path absolute).
    let scratch_name = scratch.path().file_name().unwrap_or_default();
    Ok(root.rename(&dir.join(scratch_name).join(output_name), output)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::test_module::{hello_ko, relative_to_cwd, write_hello_ko};
    use std::os::unix::fs::PermissionsExt;

    fn run(program: &str, args: &[&str], file: &Path) -> Vec<u8> {
        Command::new(program, "check compressed modules in tests")
            .args(args)
            .arg(file)
            .read()
            .unwrap()
    }

    fn vermagic(file: &Path) -> String {
        String::from_utf8_lossy(&run("modinfo", &["-F", "vermagic"], file)).into_owned()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Compresses a fresh copy of the real module and checks everything kmod and the
    /// system tools can tell about the result; returns it for format-specific checks.
    fn check_real_module(
        compression: Compression,
        options: Option<&str>,
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let module = write_hello_ko(dir.path());
        std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o640)).unwrap();

        let output = compress(
            &Root::open(dir.path()).unwrap(),
            &module,
            compression,
            options,
        )
        .unwrap();

        let expected_name = format!("hello.ko{}", compression.suffix());
        assert_eq!(output, dir.path().join(&expected_name));
        assert_eq!(
            entries(dir.path()),
            [expected_name],
            "only the result is left"
        );
        let tool = compression.tool().unwrap();
        assert_eq!(
            run(tool, &["-dc"], &output),
            hello_ko(),
            "{tool} -dc round trip"
        );
        if kmod_reads(compression) {
            let vermagic = vermagic(&output);
            assert!(
                vermagic.starts_with(crate::sign::test_module::release()),
                "{vermagic}"
            );
        }
        let mode = std::fs::metadata(&output).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "the module's mode is kept");
        (dir, output)
    }

    /// Whether this machine's kmod was built with the library for `compression`, per the
    /// feature list `kmod --version` prints (`+ZSTD +XZ -ZLIB ...`). Debian 12 builds kmod
    /// without zlib (its kernels never compress modules with gzip), so there modinfo cannot
    /// open a `.ko.gz` at all; Arch's kmod reads all three. When the feature is missing,
    /// the test insists that kmod says so, so a broken file cannot hide behind it.
    fn kmod_reads(compression: Compression) -> bool {
        let out = Command::new("kmod", "list kmod's compression support in tests")
            .arg("--version")
            .read()
            .unwrap();
        let features = String::from_utf8_lossy(&out).into_owned();
        let feature = match compression {
            Compression::None => return true,
            Compression::Zstd => "ZSTD",
            Compression::Xz => "XZ",
            Compression::Gzip => "ZLIB",
        };
        let words: Vec<&str> = features.split_whitespace().collect();
        if words.contains(&format!("+{feature}").as_str()) {
            true
        } else {
            assert!(
                words.contains(&format!("-{feature}").as_str()),
                "kmod --version lists neither +{feature} nor -{feature}: {features}"
            );
            false
        }
    }

    fn xz_robot_list(file: &Path) -> String {
        String::from_utf8_lossy(&run("xz", &["--robot", "-lvv"], file)).into_owned()
    }

    #[test]
    fn suffixes_are_those_kmod_looks_for() {
        assert_eq!(Compression::None.suffix(), "");
        assert_eq!(Compression::Zstd.suffix(), ".zst");
        assert_eq!(Compression::Xz.suffix(), ".xz");
        assert_eq!(Compression::Gzip.suffix(), ".gz");
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn no_compression_leaves_the_module_alone() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_hello_ko(dir.path());
        assert_eq!(
            compress(
                &Root::open(".").unwrap(),
                &module,
                Compression::None,
                Some("-9")
            )
            .unwrap(),
            module
        );
        assert_eq!(entries(dir.path()), ["hello.ko"]);
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn real_module_compressed_in_process_with_zstd_is_read_by_modinfo() {
        check_real_module(Compression::Zstd, None);
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn real_module_compressed_in_process_with_xz_uses_crc32_and_1mib_dictionary() {
        let (_dir, output) = check_real_module(Compression::Xz, None);
        let list = xz_robot_list(&output);
        let stream = list.lines().find(|l| l.starts_with("stream\t")).unwrap();
        assert_eq!(stream.split('\t').nth(8), Some("CRC32"), "{list}");
        assert!(list.contains("--lzma2=dict=1MiB"), "{list}");
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn real_module_compressed_in_process_with_gzip_round_trips_through_gzip() {
        check_real_module(Compression::Gzip, None);
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn blank_user_options_mean_the_in_process_defaults() {
        let (_dir, output) = check_real_module(Compression::Xz, Some("  "));
        assert!(xz_robot_list(&output).contains("\tCRC32\t"));
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn user_options_run_the_zstd_tool() {
        // dkms's default compress_zstd_opts; --rm must not touch the real module.
        check_real_module(Compression::Zstd, Some("-q --rm -T0 -19"));
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn user_options_run_the_xz_tool() {
        let (_dir, output) = check_real_module(Compression::Xz, Some("--check=sha256 -3"));
        // sha256 only xz itself writes, so this proves the tool ran with the options.
        let list = xz_robot_list(&output);
        assert!(list.contains("\tSHA-256\t"), "{list}");
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn user_options_run_the_gzip_tool() {
        check_real_module(Compression::Gzip, Some("-9"));
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn relative_roots_resolve_from_the_current_directory() {
        for options in [None, Some("-q")] {
            let dir = tempfile::tempdir().unwrap();
            write_hello_ko(dir.path());
            // A relative root resolves from the current directory, and a relative
            // module path from the root.
            let root = Root::open(relative_to_cwd(dir.path())).unwrap();
            let output =
                compress(&root, Path::new("hello.ko"), Compression::Zstd, options).unwrap();
            assert_eq!(
                root.path().join(output),
                relative_to_cwd(dir.path()).join("hello.ko.zst")
            );
            assert_eq!(entries(dir.path()), ["hello.ko.zst"], "{options:?}");
        }
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn failing_tool_keeps_the_module_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_hello_ko(dir.path());
        let err = compress(
            &Root::open(dir.path()).unwrap(),
            &module,
            Compression::Xz,
            Some("--no-such-option"),
        )
        .unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("hello.ko"), "{chain}");
        assert!(chain.contains("xz --no-such-option -f"), "{chain}");
        assert!(chain.contains("exited with status 1"), "{chain}");
        assert_eq!(entries(dir.path()), ["hello.ko"]);
        assert_eq!(std::fs::read(&module).unwrap(), hello_ko());
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn tool_options_that_write_elsewhere_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_hello_ko(dir.path());
        let err = compress(
            &Root::open(dir.path()).unwrap(),
            &module,
            Compression::Zstd,
            Some("-q --stdout"),
        )
        .unwrap_err();
        assert!(
            matches!(err, CompressError::MissingOutput { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("hello.ko.zst"), "{err}");
        assert_eq!(entries(dir.path()), ["hello.ko"]);
    }
}
