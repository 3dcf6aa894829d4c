//! `mktarball` and `ldtarball`: DKMS tarballs in upstream's format, so tarballs move
//! freely between upstream dkms and us.
//!
//! ```text
//! ./dkms_main_tree/<kernel>/<arch>/{module,log}/...     each build (empty with --source-only)
//! ./dkms_source_tree/...                               the module source (not --binaries-only)
//! ./dkms_binaries_only/{PACKAGE_NAME,PACKAGE_VERSION,dkms.conf}        (--binaries-only)
//! ```
//!
//! Upstream names it `<m>-<v>-kernel<k>-<a>[-kernel<k>-<a>...].dkms.tar.gz` (or
//! `-source-only`, or `-manykernels` past 200 characters) under
//! `<dkms_tree>/<m>/<v>/tarball/`, and `--archive` replaces the name and, when it has a
//! directory part, the directory. As with `tar -a`, the name's suffix picks the
//! compression.
//!
//! Loading is where the danger is: a tarball is untrusted input that ends up in
//! `/usr/src` and `/var/lib/dkms`, which root reads and builds. So it is never handed to
//! `tar`: every member is extracted by us into a private directory inside the DKMS tree
//! and refused (the whole load failing, nothing placed) when its name is absolute or has
//! `..`, when it would be written through a symlink, when it is a device or fifo, or when
//! it is a link whose target is absolute or resolves (following the other links) outside
//! the extraction root, or later outside the part of the tree that is moved into place.

use crate::conf::{self, ConfError};
use crate::engine::{self, AddSource, EngineError, Progress, Silent};
use crate::host::Host;
use crate::paths::Paths;
use crate::tree;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of the temporary names we create (the engine's, so leftovers are recognised).
const TEMP_PREFIX: &str = ".dkms-hook-tmp";
/// Upstream falls back to `manykernels` when the kernel list reaches this many bytes
/// (`wc -m` of the list plus its newline is more than 200).
const MAX_KERNEL_LIST: usize = 200;
/// Symlinks followed while resolving one link before giving up, as the kernel does.
const MAX_LINK_HOPS: usize = 40;

/// What `mktarball` puts in the tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TarballMode {
    /// The source and the builds.
    #[default]
    Full,
    /// `--source-only`: the source, and an empty `dkms_main_tree`.
    SourceOnly,
    /// `--binaries-only`: the builds and the dkms.conf, no source.
    BinariesOnly,
}

/// Why a tarball could not be made or loaded, with upstream's exit code.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("the module/version {module}/{version} is not in the DKMS tree: add it first (dkms add {module}/{version})")]
    NotAdded { module: String, version: String },
    #[error("{module}/{version} is broken: its source directory or the symbolic link to it is missing; reinstall the package that provides it, or remove it with `dkms remove {module}/{version} --all`")]
    Broken { module: String, version: String },
    #[error("no modules built for {kernel} ({arch}): {module}/{version} must be built for every kernel it is archived for (dkms build {module}/{version} -k {kernel})")]
    NotBuilt {
        module: String,
        version: String,
        kernel: String,
        arch: String,
    },
    #[error("bad dkms.conf")]
    Conf(#[source] Box<ConfError>),
    #[error("cannot write a tarball in {dir}: {source}; check its permissions or give another --archive")]
    DestinationNotWritable {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to make tarball {archive}: {source}")]
    Write {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make {archive}: {format} compression is not supported; name it .tar.gz, .tar.xz, .tar.zst or .tar")]
    UnsupportedCompression {
        archive: PathBuf,
        format: &'static str,
    },
    #[error("{archive} does not exist")]
    ArchiveMissing { archive: PathBuf },
    #[error("{archive}: rpm packages are not DKMS tarballs; install it with rpm, then run `dkms autoinstall`")]
    Rpm { archive: PathBuf },
    #[error("{archive}: {format}-compressed tarballs are not supported; recompress it with gzip, xz or zstd")]
    UnsupportedArchive {
        archive: PathBuf,
        format: &'static str,
    },
    #[error("{archive}: cannot read it as a tar archive: {source}")]
    Corrupt {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: refusing to load member '{member}': {reason}")]
    UnsafeMember {
        archive: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{archive} does not appear to be a correctly formed DKMS archive: no dkms.conf found within it")]
    NoDkmsConf { archive: PathBuf },
    #[error("{archive} is not a valid DKMS tarball: no valid dkms.conf in dkms_source_tree or dkms_binaries_only")]
    NoValidConf { archive: PathBuf },
    #[error("{archive}: {member} is not a valid dkms.conf")]
    ArchiveConf {
        archive: PathBuf,
        member: String,
        #[source]
        source: Box<ConfError>,
    },
    #[error("{module}/{version} is already added; remove it first (dkms remove {module}/{version} --all), or pass --force to load over it")]
    AlreadyAdded {
        module: String,
        version: String,
        /// Whether the tarball had upstream's layout (exit 8) or was a plain source
        /// tarball, which upstream hands to `add` (exit 3).
        dkms_layout: bool,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl TarballError {
    /// Upstream dkms's exit code for this failure (see the list atop dkms.in).
    pub fn exit_code(&self) -> u8 {
        match self {
            TarballError::NotAdded { .. } => 3,
            TarballError::Broken { .. } => 4,
            TarballError::NotBuilt { .. } => 6,
            TarballError::Conf(_) | TarballError::ArchiveConf { .. } => 8,
            TarballError::DestinationNotWritable { .. } => 9,
            TarballError::Write { .. } | TarballError::UnsupportedCompression { .. } => 6,
            TarballError::ArchiveMissing { .. } => 2,
            TarballError::Rpm { .. } => 9,
            TarballError::NoDkmsConf { .. } => 3,
            // Upstream has no code for an unreadable or hostile tarball (tar just
            // complains); "not a valid DKMS tarball" is the closest.
            TarballError::UnsupportedArchive { .. }
            | TarballError::Corrupt { .. }
            | TarballError::UnsafeMember { .. }
            | TarballError::NoValidConf { .. } => 7,
            TarballError::AlreadyAdded { dkms_layout, .. } => {
                if *dkms_layout {
                    8
                } else {
                    3
                }
            }
            TarballError::Engine(e) => e.exit_code(),
            TarballError::Io { .. } => 1,
        }
    }
}

fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> TarballError {
    let path = path.into();
    move |source| TarballError::Io { what, path, source }
}

// ---------------------------------------------------------------------------------
// mktarball
// ---------------------------------------------------------------------------------

/// Writes a tarball of `module`/`version` with the builds for `kernels` (pairs of
/// kernel and arch; ignored with [`TarballMode::SourceOnly`]) and returns its path.
///
/// `archive` is upstream's `--archive`: its file name replaces the default name and its
/// directory part, if any, the default `<dkms_tree>/<m>/<v>/tarball/`. The tarball is
/// written under a temporary name and renamed into place.
///
/// Fails when the version is not added (exit 3) or broken (4), its dkms.conf is bad
/// (8), a kernel has no build (6, naming the kernel), the directory cannot be written
/// (9) or writing fails (6).
pub fn make_tarball(
    host: &Host,
    module: &str,
    version: &str,
    kernels: &[(String, String)],
    mode: TarballMode,
    archive: Option<&Path>,
) -> Result<PathBuf, TarballError> {
    make_tarball_with(host, module, version, kernels, mode, archive, &Silent)
}

/// [`make_tarball`], telling `progress` what it archives and where the tarball goes.
pub fn make_tarball_with(
    host: &Host,
    module: &str,
    version: &str,
    kernels: &[(String, String)],
    mode: TarballMode,
    archive: Option<&Path>,
    progress: &dyn Progress,
) -> Result<PathBuf, TarballError> {
    let paths = &host.paths;
    check_added(paths, module, version)?;
    let (first_kernel, first_arch) = kernels
        .first()
        .map(|(k, a)| (k.as_str(), a.as_str()))
        .unwrap_or(("", ""));
    host.read_conf(module, version, first_kernel, first_arch)
        .map_err(|e| TarballError::Conf(Box::new(e)))?;

    let mut builds: Vec<(&str, &str, PathBuf)> = Vec::new();
    let kernel_list = if mode == TarballMode::SourceOnly {
        "source-only".to_string()
    } else {
        let mut names = Vec::new();
        for (kernel, arch) in kernels {
            let dir = tree::build_dir(paths, module, version, kernel, arch);
            if !dir.join("module").is_dir() {
                return Err(TarballError::NotBuilt {
                    module: module.into(),
                    version: version.into(),
                    kernel: kernel.clone(),
                    arch: arch.clone(),
                });
            }
            progress.step(&format!(
                "Marking modules for {kernel} ({arch}) for archiving..."
            ));
            names.push(format!("kernel{kernel}-{arch}"));
            if !builds.iter().any(|(k, a, _)| k == kernel && a == arch) {
                builds.push((kernel, arch, dir));
            }
        }
        names.join("-")
    };
    let kernel_list = if kernel_list.len() >= MAX_KERNEL_LIST {
        "manykernels".to_string()
    } else {
        kernel_list
    };

    let default_dir = paths.version_dir(module, version).join("tarball");
    let (dir, name) = match archive {
        None => (
            default_dir,
            OsString::from(format!("{module}-{version}-{kernel_list}.dkms.tar.gz")),
        ),
        Some(path) => {
            let name = path.file_name().ok_or_else(|| TarballError::Write {
                archive: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            })?;
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or(default_dir);
            (dir, name.to_os_string())
        }
    };
    let dest = dir.join(&name);
    let compression =
        compression_for(&name).map_err(|format| TarballError::UnsupportedCompression {
            archive: dest.clone(),
            format,
        })?;

    let source = paths.version_dir(module, version).join("source");
    let conf_file = source.join("dkms.conf");
    if mode == TarballMode::BinariesOnly {
        progress.step("Creating tarball structure to specifically accommodate binaries.");
        // Read up front: a missing dkms.conf would make a tarball nothing can load.
        fs::metadata(&conf_file).map_err(io_err("cannot read", &conf_file))?;
    } else {
        progress.step(&format!("Marking {} for archiving...", source.display()));
    }
    progress.step(&format!("Tarball location: {}", dest.display()));

    let not_writable = |source| TarballError::DestinationNotWritable {
        dir: dir.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(not_writable)?;
    let temp = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}-"))
        .tempfile_in(&dir)
        .map_err(not_writable)?;
    let write_err = |source| TarballError::Write {
        archive: dest.clone(),
        source,
    };
    write_compressed(temp.as_file(), compression, |out| {
        let mut tar = TarWriter::new(out, progress);
        tar.dir(b"./", None)?;
        tar.dir(b"./dkms_main_tree/", None)?;
        let mut kernels_written: Vec<&str> = Vec::new();
        for (kernel, arch, build) in &builds {
            let kernel_prefix = [b"./dkms_main_tree/", kernel.as_bytes(), b"/"].concat();
            if !kernels_written.contains(kernel) {
                tar.dir(&kernel_prefix, None)?;
                kernels_written.push(kernel);
            }
            let prefix = [&kernel_prefix[..], arch.as_bytes(), b"/"].concat();
            tar.dir(&prefix, Some(&fs::metadata(build)?))?;
            tar.tree(&prefix, build)?;
        }
        if mode == TarballMode::BinariesOnly {
            tar.dir(b"./dkms_binaries_only/", None)?;
            tar.bytes(
                b"./dkms_binaries_only/PACKAGE_NAME",
                format!("{module}\n").as_bytes(),
            )?;
            tar.bytes(
                b"./dkms_binaries_only/PACKAGE_VERSION",
                format!("{version}\n").as_bytes(),
            )?;
            let meta = fs::metadata(&conf_file)?;
            tar.file(
                b"./dkms_binaries_only/dkms.conf",
                &meta,
                File::open(&conf_file)?,
            )?;
        } else {
            let prefix = b"./dkms_source_tree/";
            tar.dir(prefix, Some(&fs::metadata(&source)?))?;
            tar.tree(prefix, &source)?;
        }
        tar.finish()
    })
    .map_err(write_err)?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    temp.as_file().sync_all().map_err(write_err)?;
    temp.persist(&dest).map_err(|e| write_err(e.error))?;
    sync_dir(&dir);
    Ok(dest)
}

/// Upstream's `is_module_broken` then `is_module_added`, on exact names.
fn check_added(paths: &Paths, module: &str, version: &str) -> Result<(), TarballError> {
    let not_added = || TarballError::NotAdded {
        module: module.into(),
        version: version.into(),
    };
    if !is_plain_name(module) || !is_plain_name(version) {
        return Err(not_added());
    }
    let version_dir = paths.version_dir(module, version);
    let link = version_dir.join("source");
    let is_link = link.symlink_metadata().is_ok_and(|m| m.is_symlink());
    let is_dir = link.is_dir();
    let broken = (is_link && !is_dir) || (!is_link && paths.source_dir(module, version).is_dir());
    if version_dir.is_dir() && broken {
        return Err(TarballError::Broken {
            module: module.into(),
            version: version.into(),
        });
    }
    if is_link && is_dir {
        Ok(())
    } else {
        Err(not_added())
    }
}

/// A name that is one path component.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// How a tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

/// The compression `tar -a` picks for a file name: by suffix, none when unknown.
fn compression_for(name: &OsStr) -> Result<Compression, &'static str> {
    let name = name.as_bytes();
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s.as_bytes()));
    if ends(&[".gz", ".tgz", ".taz"]) {
        Ok(Compression::Gzip)
    } else if ends(&[".xz", ".txz"]) {
        Ok(Compression::Xz)
    } else if ends(&[".zst", ".tzst"]) {
        Ok(Compression::Zstd)
    } else if ends(&[".bz2", ".tbz", ".tbz2", ".tz2", ".tb2"]) {
        Err("bzip2")
    } else if ends(&[".lzma", ".tlz"]) {
        Err("lzma")
    } else if ends(&[".lz"]) {
        Err("lzip")
    } else if ends(&[".lzo"]) {
        Err("lzop")
    } else if ends(&[".Z", ".taZ"]) {
        Err("compress")
    } else {
        Ok(Compression::None)
    }
}

/// Runs `body` on a writer that compresses into `out`, then finishes the stream.
fn write_compressed(
    out: &File,
    compression: Compression,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let buffered = io::BufWriter::new(out);
    let mut buffered = match compression {
        Compression::None => {
            let mut w = buffered;
            body(&mut w)?;
            w
        }
        Compression::Gzip => {
            // gzip's default level; no name or timestamp, like `gzip -n`.
            let mut w = flate2::GzBuilder::new()
                .operating_system(3)
                .write(buffered, flate2::Compression::new(6));
            body(&mut w)?;
            w.finish()?
        }
        Compression::Xz => {
            let mut w = lzma_rust2::XzWriter::new(buffered, lzma_rust2::XzOptions::with_preset(6))?;
            body(&mut w)?;
            w.finish()?
        }
        Compression::Zstd => {
            let mut w = zstd::stream::write::Encoder::new(buffered, 3)?;
            w.include_checksum(true)?;
            body(&mut w)?;
            w.finish()?
        }
    };
    buffered.flush()
}

/// Writes GNU-format members with names exactly as given (`./dkms_main_tree/...`, as
/// GNU tar run on `.` names them), using GNU long-name members past 100 bytes.
struct TarWriter<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
    progress: &'a dyn Progress,
    now: u64,
}

impl<'a> TarWriter<'a> {
    fn new(out: &'a mut dyn Write, progress: &'a dyn Progress) -> TarWriter<'a> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        TarWriter {
            builder: tar::Builder::new(out),
            progress,
            now,
        }
    }

    fn header(&self, kind: tar::EntryType, meta: Option<&fs::Metadata>, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        match meta {
            Some(meta) => {
                header.set_mode(meta.mode() & 0o7777);
                header.set_uid(u64::from(meta.uid()));
                header.set_gid(u64::from(meta.gid()));
                header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
            }
            None => {
                let default_mode = if kind == tar::EntryType::Directory {
                    0o755
                } else {
                    0o644
                };
                header.set_mode(default_mode);
                header.set_uid(0);
                header.set_gid(0);
                header.set_mtime(self.now);
            }
        }
        if header.uid().ok() == Some(0) {
            let _ = header.set_username("root");
        }
        if header.gid().ok() == Some(0) {
            let _ = header.set_groupname("root");
        }
        header
    }

    fn dir(&mut self, name: &[u8], meta: Option<&fs::Metadata>) -> io::Result<()> {
        let header = self.header(tar::EntryType::Directory, meta, 0);
        append_raw(&mut self.builder, header, name, None, io::empty())
    }

    fn bytes(&mut self, name: &[u8], data: &[u8]) -> io::Result<()> {
        let header = self.header(tar::EntryType::Regular, None, data.len() as u64);
        append_raw(&mut self.builder, header, name, None, data)
    }

    fn file(&mut self, name: &[u8], meta: &fs::Metadata, data: File) -> io::Result<()> {
        let size = meta.len();
        let header = self.header(tar::EntryType::Regular, Some(meta), size);
        let data = ExactReader {
            inner: data.take(size),
            remaining: size,
        };
        append_raw(&mut self.builder, header, name, None, data)
    }

    /// Adds what is in `dir` (recursively, symlinks as symlinks) under `prefix`.
    fn tree(&mut self, prefix: &[u8], dir: &Path) -> io::Result<()> {
        let mut entries = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let file_name = entry.file_name();
            if file_name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                continue;
            }
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)?;
            let name = [prefix, file_name.as_bytes()].concat();
            let kind = meta.file_type();
            if kind.is_dir() {
                let name = [&name[..], b"/"].concat();
                self.dir(&name, Some(&meta))?;
                self.tree(&name, &path)?;
            } else if kind.is_file() {
                self.file(&name, &meta, File::open(&path)?)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&path)?;
                let header = self.header(tar::EntryType::Symlink, Some(&meta), 0);
                append_raw(
                    &mut self.builder,
                    header,
                    &name,
                    Some(target.as_os_str().as_bytes()),
                    io::empty(),
                )?;
            } else {
                self.progress.warn(&format!(
                    "{}: not a file, directory or symlink; left out of the tarball",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.builder.finish()
    }
}

/// A file's contents, failing if it holds fewer bytes than its header promised (it
/// shrank while being archived), since tar's padding would otherwise hide that.
struct ExactReader<R> {
    inner: io::Take<R>,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a file shrank while it was being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Appends one member named exactly `name` (and `link`), preceded by GNU long-name
/// members when they do not fit the header.
fn append_raw<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl Read,
) -> io::Result<()> {
    if name.len() > 100 {
        append_long(builder, tar::EntryType::GNULongName, name)?;
    }
    if let Some(link) = link.filter(|l| l.len() > 100) {
        append_long(builder, tar::EntryType::GNULongLink, link)?;
    }
    let old = header.as_old_mut();
    fill(&mut old.name, name);
    fill(&mut old.linkname, link.unwrap_or_default());
    header.set_cksum();
    builder.append(&header, data)
}

fn append_long<W: Write>(
    builder: &mut tar::Builder<W>,
    kind: tar::EntryType,
    value: &[u8],
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(value.len() as u64 + 1);
    fill(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_cksum();
    builder.append(&header, [value, b"\0"].concat().as_slice())
}

/// Copies `value` into a NUL-padded header field, truncating as GNU tar does.
fn fill(slot: &mut [u8], value: &[u8]) {
    slot.fill(0);
    let n = value.len().min(slot.len());
    slot[..n].copy_from_slice(&value[..n]);
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

// ---------------------------------------------------------------------------------
// ldtarball
// ---------------------------------------------------------------------------------

/// Where the source of a loaded tarball ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedSource {
    /// Copied from the tarball to `<source_tree>/<m>-<v>` and registered.
    Copied(PathBuf),
    /// `<source_tree>/<m>-<v>` existed and was kept (without force), or the tarball
    /// had no source; it is registered.
    KeptExisting(PathBuf),
    /// A `--binaries-only` tarball and no source on the system: as upstream does, the
    /// dkms.conf went into a real directory `<dkms_tree>/<m>/<v>/source/` and the
    /// version is not registered (upstream's later versions do not count it as added).
    BinariesOnly(PathBuf),
}

/// What [`load_tarball_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub module: String,
    pub version: String,
    pub source: LoadedSource,
    /// Builds placed into the DKMS tree, as `(kernel, arch)`.
    pub loaded: Vec<(String, String)>,
    /// Builds skipped because the DKMS tree already had them (without force).
    pub skipped: Vec<(String, String)>,
}

/// Loads a tarball made by `mktarball` (ours or upstream's) or a plain source tarball
/// holding a dkms.conf, gzip, xz or zstd compressed or not; returns `(module, version)`.
///
/// See [`load_tarball_with`].
pub fn load_tarball(
    host: &Host,
    archive: &Path,
    force: bool,
) -> Result<(String, String), TarballError> {
    load_tarball_with(host, archive, force, &Silent).map(|l| (l.module, l.version))
}

/// Loads a tarball: extracts it safely (see the module docs) into a private directory
/// inside the DKMS tree, puts the source at `<source_tree>/<m>-<v>` unless it is
/// already there, places each build at `<dkms_tree>/<m>/<v>/<k>/<a>` unless already
/// there, then registers the source as `add` does (running POST_ADD).
///
/// `force` replaces an existing source and existing builds, and loads over an added
/// version. Fails, having placed nothing, when the archive is missing (exit 2),
/// unreadable or hostile (7, naming the member), has no usable dkms.conf (3 or 7, 8 if
/// it is invalid), or the version is already added (8; 3 for a plain source tarball).
pub fn load_tarball_with(
    host: &Host,
    archive: &Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<Loaded, TarballError> {
    let paths = &host.paths;
    if fs::metadata(archive).is_err() {
        return Err(TarballError::ArchiveMissing {
            archive: archive.into(),
        });
    }
    if archive.extension().is_some_and(|e| e == "rpm") {
        return Err(TarballError::Rpm {
            archive: archive.into(),
        });
    }
    fs::create_dir_all(&paths.dkms_tree)
        .map_err(io_err("cannot create directory", &paths.dkms_tree))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}-ldtarball-"))
        .tempdir_in(&paths.dkms_tree)
        .map_err(io_err("cannot create a directory in", &paths.dkms_tree))?;
    let root = temp.path();
    Extractor::new(archive, root).extract()?;

    // What the tarball holds: upstream's layout, or any tree with a dkms.conf.
    let main_tree = root.join("dkms_main_tree");
    let dkms_layout = is_real_dir(&main_tree);
    let builds = if dkms_layout {
        list_builds(&main_tree, progress)
    } else {
        Vec::new()
    };
    // dkms.conf is evaluated for the first kernel the tarball has a build for.
    let (eval_kernel, eval_arch) = builds.first().cloned().unwrap_or_default();
    let ctx = host.eval_context("", "", &eval_kernel, &eval_arch);
    let evaluate = |conf_file: &Path| {
        conf::evaluate(conf_file, &ctx).map_err(|source| TarballError::ArchiveConf {
            archive: archive.into(),
            member: member_name(root, conf_file),
            source: Box::new(source),
        })
    };
    let (payload, parsed) = if dkms_layout {
        let mut found = None;
        let mut first_error = None;
        for (loc, binaries_only) in [("dkms_source_tree", false), ("dkms_binaries_only", true)] {
            let dir = root.join(loc);
            let conf_file = dir.join("dkms.conf");
            if !is_real_dir(&dir) || !is_regular_file(&conf_file) {
                continue;
            }
            match evaluate(&conf_file) {
                Ok(parsed) => {
                    let payload = if binaries_only {
                        Payload::BinariesOnly(conf_file)
                    } else {
                        Payload::Source(dir)
                    };
                    found = Some((payload, parsed));
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match found {
            Some(found) => found,
            None => {
                return Err(first_error.unwrap_or(TarballError::NoValidConf {
                    archive: archive.into(),
                }))
            }
        }
    } else {
        let Some(conf_file) = find_dkms_conf(root) else {
            return Err(TarballError::NoDkmsConf {
                archive: archive.into(),
            });
        };
        let parsed = evaluate(&conf_file)?;
        let dir = conf_file.parent().unwrap_or(root).to_path_buf();
        (Payload::Source(dir), parsed)
    };
    let (module, version) = (parsed.package_name, parsed.package_version);
    progress.step(&format!("Loading tarball for {module}/{version}"));

    let registration = registration(paths, &module, &version);
    if matches!(registration, Registration::Added | Registration::Stub) && !force {
        return Err(TarballError::AlreadyAdded {
            module,
            version,
            dkms_layout,
        });
    }

    // Check everything before placing anything: a link that stays inside the
    // extraction root may still leave the part that is moved into place.
    let source_dir = paths.source_dir(&module, &version);
    let place_source = match &payload {
        Payload::Source(_) => force || source_dir.symlink_metadata().is_err(),
        Payload::BinariesOnly(_) => false,
    };
    if let (Payload::Source(dir), true) = (&payload, place_source) {
        check_confined(archive, root, dir)?;
    }
    let mut to_load = Vec::new();
    let mut skipped = Vec::new();
    for (kernel, arch) in builds {
        let dest = tree::build_dir(paths, &module, &version, &kernel, &arch);
        if dest.symlink_metadata().is_ok() && !force {
            progress.warn(&format!("{} already exists. Skipping...", dest.display()));
            skipped.push((kernel, arch));
            continue;
        }
        let from = main_tree.join(&kernel).join(&arch);
        check_confined(archive, root, &from)?;
        to_load.push((kernel, arch, from, dest));
    }

    // The source.
    let version_dir = paths.version_dir(&module, &version);
    let link = version_dir.join("source");
    let source = match &payload {
        Payload::Source(dir) if place_source => {
            progress.step(&format!("Copying the source to {}", source_dir.display()));
            place_dir(dir, &source_dir)?;
            LoadedSource::Copied(source_dir.clone())
        }
        Payload::Source(_) => {
            progress.step(&format!(
                "{} already exists; keeping it",
                source_dir.display()
            ));
            LoadedSource::KeptExisting(source_dir.clone())
        }
        Payload::BinariesOnly(_) if source_dir.is_dir() => {
            LoadedSource::KeptExisting(source_dir.clone())
        }
        Payload::BinariesOnly(conf_file) => {
            progress.step(&format!("Creating {}", link.display()));
            if link.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&link).map_err(io_err("cannot remove", &link))?;
            }
            fs::create_dir_all(&link).map_err(io_err("cannot create directory", &link))?;
            let staged = link.join(format!("{TEMP_PREFIX}-{}-dkms.conf", std::process::id()));
            fs::copy(conf_file, &staged).map_err(io_err("cannot write", &staged))?;
            let dest = link.join("dkms.conf");
            fs::rename(&staged, &dest).map_err(io_err("cannot rename into place", &dest))?;
            LoadedSource::BinariesOnly(link.clone())
        }
    };

    // The builds.
    let mut loaded = Vec::new();
    for (kernel, arch, from, dest) in to_load {
        progress.step(&format!("Loading {}...", dest.display()));
        place_dir(&from, &dest)?;
        loaded.push((kernel, arch));
    }

    // Registration, as `add` does it (POST_ADD included).
    if let LoadedSource::Copied(dir) | LoadedSource::KeptExisting(dir) = &source {
        let points_here = match (link.canonicalize(), dir.canonicalize()) {
            (Ok(a), Ok(b)) => link.symlink_metadata().is_ok_and(|m| m.is_symlink()) && a == b,
            _ => false,
        };
        if !points_here {
            remove_tree(&link)?;
            engine::add(
                host,
                &AddSource::ModuleVersion {
                    module: module.clone(),
                    version: version.clone(),
                },
                &eval_kernel,
                &eval_arch,
                &engine::Options::default(),
                progress,
            )?;
        }
    }
    drop(temp);
    Ok(Loaded {
        module,
        version,
        source,
        loaded,
        skipped,
    })
}

/// What a tarball brings besides builds.
enum Payload {
    /// A source tree (`dkms_source_tree`, or a plain tarball's directory of dkms.conf).
    Source(PathBuf),
    /// `dkms_binaries_only/dkms.conf`.
    BinariesOnly(PathBuf),
}

/// How a module version is registered in the DKMS tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    None,
    /// `source` is a symlink to a directory.
    Added,
    /// `source` is a real directory: a binaries-only load (upstream 3.0 calls it added).
    Stub,
    /// `source` is a dangling symlink or a file.
    Broken,
}

fn registration(paths: &Paths, module: &str, version: &str) -> Registration {
    let link = paths.version_dir(module, version).join("source");
    match link.symlink_metadata() {
        Err(_) => Registration::None,
        Ok(m) if m.is_symlink() && link.is_dir() => Registration::Added,
        Ok(m) if m.is_dir() => Registration::Stub,
        Ok(_) => Registration::Broken,
    }
}

/// The `(kernel, arch)` directories under `dkms_main_tree`, sorted; only real
/// directories with UTF-8 names not starting with a dot (upstream's `*/*`).
fn list_builds(main_tree: &Path, progress: &dyn Progress) -> Vec<(String, String)> {
    let mut builds = Vec::new();
    for kernel in sorted_subdirs(main_tree, progress) {
        for arch in sorted_subdirs(&main_tree.join(&kernel), progress) {
            builds.push((kernel.clone(), arch));
        }
    }
    builds
}

fn sorted_subdirs(dir: &Path, progress: &dyn Progress) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| match e.file_name().into_string() {
            Ok(name) => Some(name),
            Err(name) => {
                progress.warn(&format!(
                    "ignoring {}: not a UTF-8 name",
                    dir.join(name).display()
                ));
                None
            }
        })
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The shallowest `dkms.conf` file under `root` (sorted by name within a level), not
/// looking through symlinks.
fn find_dkms_conf(root: &Path) -> Option<PathBuf> {
    let mut queue = VecDeque::from([root.to_path_buf()]);
    while let Some(dir) = queue.pop_front() {
        let mut entries: Vec<_> = fs::read_dir(&dir).ok()?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in &entries {
            if entry.file_name() == "dkms.conf" && entry.file_type().is_ok_and(|t| t.is_file()) {
                return Some(entry.path());
            }
        }
        queue.extend(
            entries
                .iter()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    None
}

fn is_real_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}

fn is_regular_file(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_file())
}

/// `path` as the tarball member it came from (`./dkms_source_tree/dkms.conf`).
fn member_name(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => format!("./{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Fails unless every symlink under `subtree` resolves inside `subtree`.
fn check_confined(archive: &Path, root: &Path, subtree: &Path) -> Result<(), TarballError> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = subtree.join(&rel);
        let entries = fs::read_dir(&dir).map_err(io_err("cannot read directory", &dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("cannot read directory", &dir))?;
            let kind = entry
                .file_type()
                .map_err(io_err("cannot inspect", entry.path()))?;
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_symlink() && !resolves_inside(subtree, &child) {
                let target = fs::read_link(entry.path()).unwrap_or_default();
                let part = member_name(root, subtree);
                return Err(TarballError::UnsafeMember {
                    archive: archive.into(),
                    member: member_name(root, &entry.path()),
                    reason: format!(
                        "it is a symlink to '{}', which leads out of {part}",
                        target.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// One step of a path being resolved.
enum Step {
    Root,
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> Vec<Step> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir | Component::Prefix(_) => Some(Step::Root),
            Component::ParentDir => Some(Step::Up),
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
            Component::CurDir => None,
        })
        .collect()
}

/// Whether the symlink `root/rel` resolves inside `root`, following every symlink on
/// the way as the kernel would (a missing or non-directory component ends the walk:
/// such a link resolves to nothing, which is harmless).
fn resolves_inside(root: &Path, rel: &Path) -> bool {
    let Ok(target) = fs::read_link(root.join(rel)) else {
        return true;
    };
    // The real directories walked so far, relative to root; never holds a symlink.
    let mut at: Vec<OsString> = rel
        .parent()
        .map(|p| {
            steps(p)
                .into_iter()
                .filter_map(|s| match s {
                    Step::Name(n) => Some(n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut pending: VecDeque<Step> = steps(&target).into();
    let mut hops = 0;
    while let Some(step) = pending.pop_front() {
        match step {
            Step::Root => return false,
            Step::Up => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Step::Name(name) => {
                at.push(name);
                let here: PathBuf = at.iter().fold(root.to_path_buf(), |p, n| p.join(n));
                match here.symlink_metadata() {
                    Ok(m) if m.is_symlink() => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return false;
                        }
                        let Ok(next) = fs::read_link(&here) else {
                            return false;
                        };
                        at.pop();
                        for step in steps(&next).into_iter().rev() {
                            pending.push_front(step);
                        }
                    }
                    Ok(m) if m.is_dir() => {}
                    // A file or nothing: resolution stops here, inside root.
                    _ => return true,
                }
            }
        }
    }
    true
}

/// Moves (or, across file systems, copies) the directory `from` to `dest`, replacing
/// what is there only once the new one is complete.
fn place_dir(from: &Path, dest: &Path) -> Result<(), TarballError> {
    let parent = dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(io_err("cannot create directory", parent))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    let staged = parent.join(format!("{TEMP_PREFIX}-{pid}-{name}"));
    let old = parent.join(format!("{TEMP_PREFIX}-{pid}-old-{name}"));
    remove_tree(&staged)?;
    remove_tree(&old)?;
    match fs::rename(from, &staged) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            if let Err(e) = copy_tree(from, &staged) {
                let _ = remove_tree(&staged);
                return Err(e);
            }
        }
        Err(e) => return Err(io_err("cannot move into place", &staged)(e)),
    }
    let had_old = dest.symlink_metadata().is_ok();
    if had_old {
        fs::rename(dest, &old).map_err(io_err("cannot move aside", dest))?;
    }
    if let Err(e) = fs::rename(&staged, dest) {
        if had_old {
            let _ = fs::rename(&old, dest);
        }
        let _ = remove_tree(&staged);
        return Err(io_err("cannot rename into place", dest)(e));
    }
    sync_dir(parent);
    if had_old {
        remove_tree(&old)?;
    }
    Ok(())
}

/// Removes a file, symlink or directory tree, never following symlinks.
fn remove_tree(path: &Path) -> Result<(), TarballError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot inspect", path)(e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err("cannot remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io_err("cannot remove", path)),
    }
}

/// Copies a tree of directories, files and symlinks, keeping modes and file times.
fn copy_tree(from: &Path, to: &Path) -> Result<(), TarballError> {
    let meta = fs::symlink_metadata(from).map_err(io_err("cannot inspect", from))?;
    fs::DirBuilder::new()
        .mode(meta.mode() & 0o7777)
        .create(to)
        .map_err(io_err("cannot create directory", to))?;
    for entry in fs::read_dir(from).map_err(io_err("cannot read directory", from))? {
        let entry = entry.map_err(io_err("cannot read directory", from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src).map_err(io_err("cannot inspect", &src))?;
        if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else if meta.is_symlink() {
            let target = fs::read_link(&src).map_err(io_err("cannot read symlink", &src))?;
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(io_err("cannot create symlink", &dst))?;
        } else {
            fs::copy(&src, &dst).map_err(io_err("cannot copy to", &dst))?;
            if let Ok(mtime) = meta.modified() {
                let _ = File::options()
                    .write(true)
                    .open(&dst)
                    .and_then(|f| f.set_modified(mtime));
            }
        }
    }
    Ok(())
}

/// Reads a tarball member by member into `root`, which must be a fresh private
/// directory: nothing is ever written outside it (see the module docs).
struct Extractor<'a> {
    archive: &'a Path,
    root: &'a Path,
    /// Symlinks created, relative to root, with their member names, for the final check.
    symlinks: Vec<(PathBuf, String)>,
    /// Directories and the modes to give them once everything is extracted.
    dirs: Vec<(PathBuf, u32)>,
}

impl<'a> Extractor<'a> {
    fn new(archive: &'a Path, root: &'a Path) -> Extractor<'a> {
        Extractor {
            archive,
            root,
            symlinks: Vec::new(),
            dirs: Vec::new(),
        }
    }

    fn corrupt(&self, source: io::Error) -> TarballError {
        TarballError::Corrupt {
            archive: self.archive.into(),
            source,
        }
    }

    fn unsafe_member(&self, member: &str, reason: impl Into<String>) -> TarballError {
        TarballError::UnsafeMember {
            archive: self.archive.into(),
            member: member.into(),
            reason: reason.into(),
        }
    }

    /// The decompressed archive, the format told by its first bytes as `tar` does.
    fn open(&self) -> Result<Box<dyn Read>, TarballError> {
        let file = File::open(self.archive).map_err(io_err("cannot open", self.archive))?;
        let mut reader = BufReader::new(file);
        let magic = reader
            .fill_buf()
            .map_err(io_err("cannot read", self.archive))?
            .to_vec();
        let unsupported = |format| TarballError::UnsupportedArchive {
            archive: self.archive.into(),
            format,
        };
        Ok(if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(reader))
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Box::new(lzma_rust2::XzReader::new(reader, true))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(|e| self.corrupt(e))?)
        } else if magic.starts_with(b"BZh") {
            return Err(unsupported("bzip2"));
        } else if magic.starts_with(b"LZIP") {
            return Err(unsupported("lzip"));
        } else if magic.starts_with(&[0x1f, 0x9d]) {
            return Err(unsupported("compress"));
        } else if magic.starts_with(&[0x5d, 0, 0]) {
            return Err(unsupported("lzma"));
        } else {
            Box::new(reader)
        })
    }

    fn extract(mut self) -> Result<(), TarballError> {
        let input = self.open()?;
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|e| self.corrupt(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.corrupt(e))?;
            self.entry(&mut entry)?;
        }
        // Links checked one by one can still escape together (`a -> ..` then `b ->
        // a/..`), so resolve each again now that all of them exist.
        for (rel, member) in &self.symlinks {
            if !resolves_inside(self.root, rel) {
                let target = fs::read_link(self.root.join(rel)).unwrap_or_default();
                return Err(self.unsafe_member(
                    member,
                    format!(
                        "it is a symlink to '{}', which leads out of the archive",
                        target.display()
                    ),
                ));
            }
        }
        // The root becomes the source directory when a plain tarball has its dkms.conf
        // at the top; tempfile made it 0700.
        self.dirs.push((PathBuf::new(), 0o755));
        // Deepest first, so a read-only directory does not stop its children.
        self.dirs
            .sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, mode) in &self.dirs {
            let path = self.root.join(rel);
            if is_real_dir(&path) {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err("cannot set mode of", &path))?;
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), TarballError> {
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let rel = relative_member_path(&entry.path_bytes())
            .map_err(|reason| self.unsafe_member(&member, reason))?;
        let mode = entry.header().mode().map_err(|e| self.corrupt(e))? & 0o777;
        if rel.as_os_str().is_empty() {
            // `./`: the root itself, which is ours.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(self.unsafe_member(&member, "it names the archive's root as a file"))
            };
        }
        if kind.is_character_special() || kind.is_block_special() {
            return Err(self.unsafe_member(&member, "it is a device node"));
        }
        if kind.is_fifo() {
            return Err(self.unsafe_member(&member, "it is a fifo"));
        }
        self.make_parents(&rel, &member)?;
        let path = self.root.join(&rel);
        if kind.is_dir() {
            match path.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
                    self.mkdir(&path)?;
                }
                Err(_) => self.mkdir(&path)?,
            }
            self.dirs.push((rel, mode));
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.clear(&path, &member)?;
            let mut file = create_new(&path).map_err(io_err("cannot create", &path))?;
            io::copy(entry, &mut file).map_err(|e| self.corrupt(e))?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err("cannot set mode of", &path))?;
            if let Ok(mtime) = entry.header().mtime() {
                let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
            }
        } else if kind.is_symlink() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let target = PathBuf::from(OsStr::from_bytes(&target));
            if target.as_os_str().is_empty() {
                return Err(self.unsafe_member(&member, "it is a symlink without a target"));
            }
            if target.has_root() {
                return Err(self.unsafe_member(
                    &member,
                    format!(
                        "it is a symlink to the absolute path '{}'",
                        target.display()
                    ),
                ));
            }
            if escapes_lexically(&rel, &target) {
                return Err(self.unsafe_member(
                    &member,
                    format!(
                        "it is a symlink to '{}', which leads out of the archive",
                        target.display()
                    ),
                ));
            }
            self.clear(&path, &member)?;
            std::os::unix::fs::symlink(&target, &path)
                .map_err(io_err("cannot create symlink", &path))?;
            self.symlinks.push((rel, member));
        } else if kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let shown = String::from_utf8_lossy(&target).into_owned();
            let target_rel = relative_member_path(&target).map_err(|reason| {
                self.unsafe_member(&member, format!("it is a hard link to '{shown}': {reason}"))
            })?;
            let source = self.root.join(&target_rel);
            if target_rel.as_os_str().is_empty()
                || !self.under_real_dirs(&target_rel)
                || !is_regular_file(&source)
            {
                return Err(self.unsafe_member(
                    &member,
                    format!(
                        "it is a hard link to '{shown}', which is not a file extracted before it"
                    ),
                ));
            }
            self.clear(&path, &member)?;
            let mut from = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&source)
                .map_err(io_err("cannot open", &source))?;
            let mut file = create_new(&path).map_err(io_err("cannot create", &path))?;
            io::copy(&mut from, &mut file).map_err(io_err("cannot write", &path))?;
            let source_mode = from.metadata().map(|m| m.mode() & 0o777).unwrap_or(mode);
            file.set_permissions(fs::Permissions::from_mode(source_mode))
                .map_err(io_err("cannot set mode of", &path))?;
        } else {
            return Err(self.unsafe_member(
                &member,
                format!(
                    "its type '{}' is not a file, directory or link",
                    char::from(kind.as_byte()).escape_default()
                ),
            ));
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> Result<(), TarballError> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(io_err("cannot create directory", path))
    }

    /// Creates the missing parents of `rel`, refusing to go through anything but real
    /// directories, so that no member is ever written through a symlink.
    fn make_parents(&self, rel: &Path, member: &str) -> Result<(), TarballError> {
        let mut at = self.root.to_path_buf();
        let mut shown = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for part in parent.components() {
            at.push(part);
            shown.push(part);
            match at.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.is_symlink() => {
                    return Err(self.unsafe_member(
                        member,
                        format!("it lies under the symlink '{}'", shown.display()),
                    ))
                }
                Ok(_) => {
                    return Err(self.unsafe_member(
                        member,
                        format!("it lies under the non-directory '{}'", shown.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.mkdir(&at)?;
                    fs::set_permissions(&at, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("cannot set mode of", &at))?;
                }
                Err(e) => return Err(io_err("cannot inspect", &at)(e)),
            }
        }
        Ok(())
    }

    /// Whether every parent of `rel` is a real directory (no symlink on the way).
    fn under_real_dirs(&self, rel: &Path) -> bool {
        let mut at = self.root.to_path_buf();
        rel.parent().is_none_or(|parent| {
            parent.components().all(|part| {
                at.push(part);
                is_real_dir(&at)
            })
        })
    }

    /// Makes room for a non-directory member: an earlier file or link of the same name
    /// is replaced (as tar does); a directory is not.
    fn clear(&self, path: &Path, member: &str) -> Result<(), TarballError> {
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                Err(self.unsafe_member(member, "it would replace a directory extracted before it"))
            }
            Ok(_) => fs::remove_file(path).map_err(io_err("cannot remove", path)),
            Err(_) => Ok(()),
        }
    }
}

/// A member's path relative to the extraction root, `./` and `.` dropped; refuses
/// absolute paths and `..`.
fn relative_member_path(bytes: &[u8]) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for part in Path::new(OsStr::from_bytes(bytes)).components() {
        match part {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute".into()),
        }
    }
    Ok(rel)
}

/// Whether `target`, read from the directory of the link `rel`, climbs above the root
/// by its text alone.
fn escapes_lexically(rel: &Path, target: &Path) -> bool {
    let mut depth = rel.components().count().saturating_sub(1);
    for part in target.components() {
        match part {
            Component::ParentDir => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Creates a file that did not exist, without following a symlink at its name.
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use std::collections::BTreeMap;
    use std::process::Command;
    use std::sync::OnceLock;

    const K: &str = "6.1.0-54-amd64";
    const A: &str = "x86_64";
    const HEADERS: &str = "/usr/src/linux-headers-6.1.0-54-amd64";
    /// A source file whose path needs a GNU long-name member (over 100 bytes).
    const DEEP: &str = "include/a-directory-with-a-rather-long-name/another-directory-with-a-long-name/and-a-file-with-a-long-name.h";

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hello-1.0")
    }

    /// hello.ko, built once per test run from the fixture with the real headers.
    fn hello_ko() -> &'static [u8] {
        static KO: OnceLock<Vec<u8>> = OnceLock::new();
        KO.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            for name in ["Makefile", "hello.c"] {
                fs::copy(fixture().join(name), dir.path().join(name)).unwrap();
            }
            let out = Command::new("make")
                .arg("-C")
                .arg(HEADERS)
                .arg(format!("M={}", dir.path().display()))
                .arg("modules")
                .output()
                .expect("running make");
            assert!(
                out.status.success(),
                "building hello.ko against {HEADERS} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            fs::read(dir.path().join("hello.ko")).unwrap()
        })
    }

    fn host(root: &Path) -> Host {
        let paths = Paths {
            dkms_tree: root.join("dkms"),
            source_tree: root.join("src"),
            install_tree: root.join("inst"),
            etc_dir: root.join("etc"),
            os_release: Vec::new(),
            kernel_source_dir: None,
            temp_dir: root.to_path_buf(),
        };
        Host::new(paths, Settings::default())
    }

    fn write(path: &Path, data: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    /// A tree where hello/1.0 is added (with a few awkward source files) and built for K.
    fn built_tree(root: &Path) -> Host {
        let host = host(root);
        let src = host.paths.source_dir("hello", "1.0");
        for name in ["Makefile", "hello.c", "dkms.conf"] {
            write(&src.join(name), &fs::read(fixture().join(name)).unwrap());
        }
        write(&src.join(DEEP), b"/* deep */\n");
        write(&src.join("script.sh"), b"#!/bin/sh\n");
        fs::set_permissions(src.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("hello.c", src.join("link.c")).unwrap();
        let version_dir = host.paths.version_dir("hello", "1.0");
        fs::create_dir_all(&version_dir).unwrap();
        std::os::unix::fs::symlink(&src, version_dir.join("source")).unwrap();
        add_build(&host, K);
        host
    }

    fn add_build(host: &Host, kernel: &str) {
        let build = tree::build_dir(&host.paths, "hello", "1.0", kernel, A);
        write(&build.join("module/hello.ko"), hello_ko());
        write(&build.join("log/make.log"), b"make log\n");
    }

    fn kernels(list: &[&str]) -> Vec<(String, String)> {
        list.iter()
            .map(|k| (k.to_string(), A.to_string()))
            .collect()
    }

    /// What GNU tar lists, so the archives are checked by the tool upstream uses.
    fn gnu_tar_list(archive: &Path) -> Vec<String> {
        let out = Command::new("tar")
            .arg("-tf")
            .arg(archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tar -tf {}: {out:?}",
            archive.display()
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Every path under `dir` with its kind and contents (or link target) and mode.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>, u32)> {
        let mut found = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            for entry in fs::read_dir(&at).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                let mode = meta.mode() & 0o7777;
                if meta.is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    found.insert(
                        rel,
                        ("link".into(), target.as_os_str().as_bytes().to_vec(), 0),
                    );
                } else if meta.is_dir() {
                    found.insert(rel, ("dir".into(), Vec::new(), mode));
                    stack.push(path);
                } else {
                    found.insert(rel, ("file".into(), fs::read(&path).unwrap(), mode));
                }
            }
        }
        found
    }

    #[test]
    fn full_tarball_has_upstreams_layout_and_default_place() {
        let a = tempfile::tempdir().unwrap();
        let host = built_tree(a.path());
        let made = make_tarball(
            &host,
            "hello",
            "1.0",
            &kernels(&[K]),
            TarballMode::Full,
            None,
        )
        .unwrap();
        assert_eq!(
            made,
            a.path().join(format!(
                "dkms/hello/1.0/tarball/hello-1.0-kernel{K}-{A}.dkms.tar.gz"
            ))
        );
        assert_eq!(fs::read(&made).unwrap()[..2], [0x1f, 0x8b], "gzip");
        assert_eq!(
            fs::metadata(&made).unwrap().mode() & 0o777,
            0o644,
            "a tempfile's 0600 must not leak"
        );
        let listed = gnu_tar_list(&made);
        let expected = [
            "./".to_string(),
            "./dkms_main_tree/".into(),
            format!("./dkms_main_tree/{K}/"),
            format!("./dkms_main_tree/{K}/{A}/"),
            format!("./dkms_main_tree/{K}/{A}/log/"),
            format!("./dkms_main_tree/{K}/{A}/log/make.log"),
            format!("./dkms_main_tree/{K}/{A}/module/"),
            format!("./dkms_main_tree/{K}/{A}/module/hello.ko"),
            "./dkms_source_tree/".into(),
            "./dkms_source_tree/Makefile".into(),
            "./dkms_source_tree/dkms.conf".into(),
            "./dkms_source_tree/hello.c".into(),
            "./dkms_source_tree/include/".into(),
            "./dkms_source_tree/include/a-directory-with-a-rather-long-name/".into(),
            "./dkms_source_tree/include/a-directory-with-a-rather-long-name/another-directory-with-a-long-name/".into(),
            format!("./dkms_source_tree/{DEEP}"),
            "./dkms_source_tree/link.c".into(),
            "./dkms_source_tree/script.sh".into(),
        ];
        assert_eq!(listed, expected);
    }

    #[test]
    fn full_tarball_round_trips_into_a_fresh_tree() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let host_a = built_tree(a.path());
        let made = make_tarball(
            &host_a,
            "hello",
            "1.0",
            &kernels(&[K]),
            TarballMode::Full,
            None,
        )
        .unwrap();
        let host_b = host(b.path());
        let loaded = load_tarball_with(&host_b, &made, false, &Silent).unwrap();
        let src_b = b.path().join("src/hello-1.0");
        assert_eq!(
            loaded,
            Loaded {
                module: "hello".into(),
                version: "1.0".into(),
                source: LoadedSource::Copied(src_b.clone()),
                loaded: kernels(&[K]),
                skipped: Vec::new(),
            }
        );
        // The source, byte for byte, with modes and symlinks.
        assert_eq!(snapshot(&src_b), snapshot(&a.path().join("src/hello-1.0")));
        assert_eq!(
            fs::read_link(b.path().join("dkms/hello/1.0/source")).unwrap(),
            src_b.canonicalize().unwrap()
        );
        // The build.
        let build_a = tree::build_dir(&host_a.paths, "hello", "1.0", K, A);
        let build_b = tree::build_dir(&host_b.paths, "hello", "1.0", K, A);
        assert_eq!(snapshot(&build_b), snapshot(&build_a));
        assert_eq!(
            fs::read(build_b.join("module/hello.ko")).unwrap(),
            hello_ko()
        );
        assert_eq!(
            tree::built_for(&host_b.paths, "hello", "1.0", None, None),
            kernels(&[K])
        );
        // No temporary directory left behind.
        let leftovers: Vec<_> = fs::read_dir(b.path().join("dkms"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [OsString::from("hello")]);

        // Loading again is refused (upstream: exit 8), and --force reloads.
        let again = load_tarball(&host_b, &made, false).unwrap_err();
        assert!(
            matches!(again, TarballError::AlreadyAdded { .. }),
            "{again}"
        );
        assert_eq!(again.exit_code(), 8);
        fs::write(build_b.join("module/hello.ko"), b"stale").unwrap();
        fs::write(src_b.join("hello.c"), b"stale").unwrap();
        assert_eq!(
            load_tarball(&host_b, &made, true).unwrap(),
            ("hello".to_string(), "1.0".to_string())
        );
        assert_eq!(
            fs::read(build_b.join("module/hello.ko")).unwrap(),
            hello_ko()
        );
        assert_eq!(snapshot(&src_b), snapshot(&a.path().join("src/hello-1.0")));
    }

    #[test]
    fn source_is_copied_when_the_source_tree_is_on_another_file_system() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let shm = tempfile::tempdir_in("/dev/shm").expect("a directory on /dev/shm");
        let dev = |p: &Path| fs::metadata(p).unwrap().dev();
        assert_ne!(
            dev(b.path()),
            dev(shm.path()),
            "this test needs /dev/shm on its own file system"
        );
        let host_a = built_tree(a.path());
        let made = make_tarball(
            &host_a,
            "hello",
            "1.0",
            &kernels(&[K]),
            TarballMode::Full,
            None,
        )
        .unwrap();
        let mut host_b = host(b.path());
        host_b.paths.source_tree = shm.path().to_path_buf();
        let loaded = load_tarball_with(&host_b, &made, false, &Silent).unwrap();
        let src_a = a.path().join("src/hello-1.0");
        let src_b = shm.path().join("hello-1.0");
        assert_eq!(loaded.source, LoadedSource::Copied(src_b.clone()));
        assert_eq!(snapshot(&src_b), snapshot(&src_a));
        let mtime = |p: &Path| fs::metadata(p).unwrap().mtime();
        assert_eq!(mtime(&src_b.join("hello.c")), mtime(&src_a.join("hello.c")));
        let leftovers: Vec<_> = fs::read_dir(shm.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [OsString::from("hello-1.0")]);
    }

    #[test]
    fn source_only_and_binaries_only_tarballs() {
        let a = tempfile::tempdir().unwrap();
        let host_a = built_tree(a.path());
        let source_only = make_tarball(
            &host_a,
            "hello",
            "1.0",
            &kernels(&[K]),
            TarballMode::SourceOnly,
            None,
        )
        .unwrap();
        assert_eq!(
            source_only.file_name().unwrap(),
            "hello-1.0-source-only.dkms.tar.gz"
        );
        let listed = gnu_tar_list(&source_only);
        assert!(listed.contains(&"./dkms_main_tree/".to_string()));
        assert!(!listed.iter().any(|m| m.starts_with("./dkms_main_tree/6")));
        assert!(listed.contains(&"./dkms_source_tree/dkms.conf".to_string()));

        let binaries = make_tarball(
            &host_a,
            "hello",
            "1.0",
            &kernels(&[K]),
            TarballMode::BinariesOnly,
            Some(&a.path().join("bin.tgz")),
        )
        .unwrap();
        assert_eq!(binaries, a.path().join("bin.tgz"));
        let listed = gnu_tar_list(&binaries);
        assert!(!listed.iter().any(|m| m.starts_with("./dkms_source_tree")));
        for member in [
            "./dkms_binaries_only/PACKAGE_NAME",
            "./dkms_binaries_only/PACKAGE_VERSION",
            "./dkms_binaries_only/dkms.conf",
        ] {
            assert!(
                listed.contains(&member.to_string()),
                "{member} in {listed:?}"
            );
        }

        // Source only: added, nothing built.
        let b = tempfile::tempdir().unwrap();
        let host_b = host(b.path());
        let loaded = load_tarball_with(&host_b, &source_only, false, &Silent).unwrap();
        assert!(loaded.loaded.is_empty());
        assert!(b.path().join("dkms/hello/1.0/source/hello.c").is_file());

        // Binaries only, no source on the system: upstream's stub directory.
        let c = tempfile::tempdir().unwrap();
        let host_c = host(c.path());
        let loaded = load_tarball_with(&host_c, &binaries, false, &Silent).unwrap();
        let stub = c.path().join("dkms/hello/1.0/source");
        assert_eq!(loaded.source, LoadedSource::BinariesOnly(stub.clone()));
        assert!(!stub.is_symlink() && stub.join("dkms.conf").is_file());
        assert!(!c.path().join("src/hello-1.0").exists());
        assert_eq!(
            fs::read(tree::build_dir(&host_c.paths, "hello", "1.0", K, A).join("module/hello.ko"))
                .unwrap(),
            hello_ko()
        );
        let again = load_tarball(&host_c, &binaries, false).unwrap_err();
        assert_eq!(again.exit_code(), 8, "{again}");

        // Binaries only with the source present: registered like add.
        let d = tempfile::tempdir().unwrap();
        let host_d = host(d.path());
        let src_d = d.path().join("src/hello-1.0");
        for name in ["Makefile", "hello.c", "dkms.conf"] {
            write(&src_d.join(name), &fs::read(fixture().join(name)).unwrap());
        }
        let loaded = load_tarball_with(&host_d, &binaries, false, &Silent).unwrap();
        assert_eq!(loaded.source, LoadedSource::KeptExisting(src_d.clone()));
        assert_eq!(
            fs::read_link(d.path().join("dkms/hello/1.0/source")).unwrap(),
            src_d.canonicalize().unwrap()
        );
    }

    #[test]
    fn archive_names_pick_place_and_compression() {
        let a = tempfile::tempdir().unwrap();
        let host_a = built_tree(a.path());
        let make = |archive: &Path| {
            make_tarball(
                &host_a,
                "hello",
                "1.0",
                &kernels(&[K]),
                TarballMode::Full,
                Some(archive),
            )
        };
        // No directory part: upstream keeps the default directory.
        let plain = make(Path::new("plain.tar")).unwrap();
        assert_eq!(plain, a.path().join("dkms/hello/1.0/tarball/plain.tar"));
        assert_eq!(&fs::read(&plain).unwrap()[257..262], b"ustar");
        let xz = make(&a.path().join("out/x.tar.xz")).unwrap();
        assert_eq!(
            fs::read(&xz).unwrap()[..6],
            [0xfd, b'7', b'z', b'X', b'Z', 0]
        );
        let zst = make(&a.path().join("out/x.tar.zst")).unwrap();
        assert_eq!(fs::read(&zst).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        for archive in [&plain, &xz, &zst] {
            assert_eq!(gnu_tar_list(archive).len(), 18, "{}", archive.display());
            let b = tempfile::tempdir().unwrap();
            let loaded = load_tarball_with(&host(b.path()), archive, false, &Silent).unwrap();
            assert_eq!(loaded.loaded, kernels(&[K]), "{}", archive.display());
        }
        // Gzip data under a plain name is still read: the magic decides.
        let disguised = a.path().join("disguised.tar");
        fs::copy(make(Path::new("real.tar.gz")).unwrap(), &disguised).unwrap();
        let b = tempfile::tempdir().unwrap();
        load_tarball(&host(b.path()), &disguised, false).unwrap();

        let bz2 = make(&a.path().join("x.tar.bz2")).unwrap_err();
        assert!(matches!(
            bz2,
            TarballError::UnsupportedCompression {
                format: "bzip2",
                ..
            }
        ));
        assert_eq!(bz2.exit_code(), 6);
    }

    #[test]
    fn making_needs_an_added_and_built_version() {
        let a = tempfile::tempdir().unwrap();
        let host_a = built_tree(a.path());
        let other = "6.1.0-53-amd64";
        let err = make_tarball(
            &host_a,
            "hello",
            "1.0",
            &kernels(&[K, other]),
            TarballMode::Full,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains(other), "{err}");
        assert_eq!(err.exit_code(), 6);
        assert!(!a.path().join("dkms/hello/1.0/tarball").exists());
        // Source only needs no build.
        make_tarball(
            &host_a,
            "hello",
            "1.0",
            &kernels(&[other]),
            TarballMode::SourceOnly,
            None,
        )
        .unwrap();

        let err = make_tarball(&host_a, "hello", "2.0", &[], TarballMode::Full, None).unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");
        let err = make_tarball(&host_a, "../x", "1.0", &[], TarballMode::Full, None).unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");
        fs::rename(a.path().join("src/hello-1.0"), a.path().join("src/moved")).unwrap();
        let err = make_tarball(&host_a, "hello", "1.0", &[], TarballMode::Full, None).unwrap_err();
        assert!(matches!(err, TarballError::Broken { .. }), "{err}");
        assert_eq!(err.exit_code(), 4);
    }

    #[test]
    fn many_kernels_make_a_short_name() {
        let a = tempfile::tempdir().unwrap();
        let host_a = built_tree(a.path());
        let many: Vec<String> = (0..8).map(|i| format!("6.1.{i}-100-amd64")).collect();
        for kernel in &many {
            add_build(&host_a, kernel);
        }
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let made = make_tarball(
            &host_a,
            "hello",
            "1.0",
            &kernels(&many),
            TarballMode::Full,
            None,
        )
        .unwrap();
        assert_eq!(
            made.file_name().unwrap(),
            "hello-1.0-manykernels.dkms.tar.gz"
        );
        let b = tempfile::tempdir().unwrap();
        let loaded = load_tarball_with(&host(b.path()), &made, false, &Silent).unwrap();
        assert_eq!(loaded.loaded.len(), 8);
    }

    #[test]
    fn plain_source_tarballs_and_bad_archives() {
        let root = tempfile::tempdir().unwrap();
        let host = host(&root.path().join("tree"));
        // A release tarball: hello-1.0/{dkms.conf,...}, found wherever dkms.conf is.
        let mut entries = vec![Member::dir("hello-1.0/")];
        for name in ["Makefile", "hello.c", "dkms.conf"] {
            let data = fs::read(fixture().join(name)).unwrap();
            entries.push(Member::file(&format!("hello-1.0/{name}"), &data));
        }
        let archive = root.path().join("hello-1.0.tar");
        fs::write(&archive, raw_tar(&entries)).unwrap();
        let loaded = load_tarball_with(&host, &archive, false, &Silent).unwrap();
        assert_eq!(
            loaded.source,
            LoadedSource::Copied(root.path().join("tree/src/hello-1.0"))
        );
        assert!(root
            .path()
            .join("tree/dkms/hello/1.0/source/dkms.conf")
            .is_file());
        let err = load_tarball(&host, &archive, false).unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");

        let missing = load_tarball(&host, &root.path().join("nope.tar.gz"), false).unwrap_err();
        assert_eq!(missing.exit_code(), 2, "{missing}");
        let garbage = root.path().join("garbage.tar.gz");
        fs::write(&garbage, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let err = load_tarball(&host, &garbage, false).unwrap_err();
        assert!(matches!(err, TarballError::Corrupt { .. }), "{err}");
        let no_conf = root.path().join("no-conf.tar");
        fs::write(&no_conf, raw_tar(&[Member::file("README", b"hi")])).unwrap();
        let err = load_tarball(&host, &no_conf, false).unwrap_err();
        assert!(matches!(err, TarballError::NoDkmsConf { .. }), "{err}");
        assert_eq!(err.exit_code(), 3);
        let empty_layout = root.path().join("empty-layout.tar");
        fs::write(&empty_layout, raw_tar(&[Member::dir("./dkms_main_tree/")])).unwrap();
        let err = load_tarball(&host, &empty_layout, false).unwrap_err();
        assert!(matches!(err, TarballError::NoValidConf { .. }), "{err}");
        assert_eq!(err.exit_code(), 7);
    }

    /// One member of a hand-made archive; names and targets are written as given,
    /// which the tar crate's own API would refuse for hostile ones.
    struct Member {
        kind: tar::EntryType,
        name: Vec<u8>,
        link: Option<Vec<u8>>,
        data: Vec<u8>,
    }

    impl Member {
        fn dir(name: &str) -> Member {
            Member {
                kind: tar::EntryType::Directory,
                name: name.into(),
                link: None,
                data: Vec::new(),
            }
        }
        fn file(name: &str, data: &[u8]) -> Member {
            Member {
                kind: tar::EntryType::Regular,
                name: name.into(),
                link: None,
                data: data.into(),
            }
        }
        fn symlink(name: &str, target: &str) -> Member {
            Member {
                kind: tar::EntryType::Symlink,
                name: name.into(),
                link: Some(target.into()),
                data: Vec::new(),
            }
        }
        fn hard_link(name: &str, target: &str) -> Member {
            Member {
                kind: tar::EntryType::Link,
                ..Member::symlink(name, target)
            }
        }
        fn special(kind: tar::EntryType, name: &str) -> Member {
            Member {
                kind,
                ..Member::dir(name)
            }
        }
    }

    fn raw_tar(members: &[Member]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for m in members {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(m.kind);
            header.set_mode(if m.kind.is_dir() { 0o755 } else { 0o644 });
            header.set_size(m.data.len() as u64);
            header.set_mtime(1_700_000_000);
            append_raw(
                &mut builder,
                header,
                &m.name,
                m.link.as_deref(),
                m.data.as_slice(),
            )
            .unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A dkms layout whose members are fine but for `extra`.
    fn layout_with(extra: Vec<Member>) -> Vec<Member> {
        let conf = fs::read(fixture().join("dkms.conf")).unwrap();
        let mut members = vec![
            Member::dir("./"),
            Member::dir("./dkms_main_tree/"),
            Member::dir("./dkms_source_tree/"),
            Member::file("./dkms_source_tree/dkms.conf", &conf),
        ];
        members.extend(extra);
        members
    }

    #[test]
    fn hostile_members_are_refused_and_nothing_escapes() {
        let evil_abs = format!("/etc/dkms-hook-tarball-test-evil-{}", std::process::id());
        let cases: Vec<(&str, Vec<Member>, &str, &str)> = vec![
            (
                "parent",
                vec![Member::file("../evil", b"x")],
                "../evil",
                "'..'",
            ),
            (
                "parent inside",
                layout_with(vec![Member::file("./dkms_source_tree/../../evil", b"x")]),
                "./dkms_source_tree/../../evil",
                "'..'",
            ),
            (
                "absolute",
                vec![Member::file(&evil_abs, b"x")],
                &evil_abs,
                "absolute",
            ),
            (
                "symlink to /etc, then a file through it",
                layout_with(vec![
                    Member::symlink("./dkms_source_tree/etc", "/etc"),
                    Member::file("./dkms_source_tree/etc/dkms-hook-evil", b"x"),
                ]),
                "./dkms_source_tree/etc",
                "absolute path '/etc'",
            ),
            (
                "symlink climbing out",
                layout_with(vec![Member::symlink("./dkms_source_tree/x", "../../x")]),
                "./dkms_source_tree/x",
                "leads out of the archive",
            ),
            (
                "file written through an inside symlink",
                vec![
                    Member::symlink("a", "."),
                    Member::symlink("a/b", ".."),
                    Member::file("a/b/evil", b"x"),
                ],
                "a/b",
                "lies under the symlink 'a'",
            ),
            (
                "links escaping together",
                vec![
                    Member::symlink("b", "a/x/.."),
                    Member::dir("a/"),
                    Member::symlink("a/x", ".."),
                ],
                "b",
                "leads out of the archive",
            ),
            (
                "hard link to an absolute path",
                vec![Member::hard_link("h", "/etc/passwd")],
                "h",
                "absolute",
            ),
            (
                "hard link climbing out",
                vec![Member::hard_link("h", "../x")],
                "h",
                "'..'",
            ),
            (
                "hard link through a symlink",
                vec![Member::symlink("s", "."), Member::hard_link("h", "s/x")],
                "h",
                "not a file extracted before it",
            ),
            (
                "fifo",
                vec![Member::special(
                    tar::EntryType::Fifo,
                    "./dkms_source_tree/p",
                )],
                "./dkms_source_tree/p",
                "fifo",
            ),
            (
                "device",
                vec![Member::special(tar::EntryType::Char, "null")],
                "null",
                "device",
            ),
            (
                "symlink leaving the source it is loaded with",
                layout_with(vec![Member::symlink(
                    "./dkms_source_tree/up",
                    "../dkms_main_tree",
                )]),
                "./dkms_source_tree/up",
                "leads out of ./dkms_source_tree",
            ),
        ];
        for (what, members, member, reason) in cases {
            let root = tempfile::tempdir().unwrap();
            let host = host(&root.path().join("tree"));
            fs::create_dir_all(&host.paths.dkms_tree).unwrap();
            fs::create_dir_all(&host.paths.source_tree).unwrap();
            for (suffix, bytes) in [
                ("tar", raw_tar(&members)),
                ("tar.gz", gzip(&raw_tar(&members))),
            ] {
                let archive = root.path().join(format!("evil.{suffix}"));
                fs::write(&archive, &bytes).unwrap();
                let before = snapshot(root.path());
                let err = load_tarball(&host, &archive, false).unwrap_err();
                let TarballError::UnsafeMember {
                    member: named,
                    reason: why,
                    ..
                } = &err
                else {
                    panic!("{what}: expected an unsafe member, got: {err}");
                };
                assert_eq!(named, member, "{what}: {err}");
                assert!(why.contains(reason), "{what}: {err}");
                let message = err.to_string();
                assert!(
                    message.contains(&archive.display().to_string()) && message.contains(member),
                    "{what}: the message must name the archive and member: {message}"
                );
                assert_eq!(err.exit_code(), 7);
                assert_eq!(
                    snapshot(root.path()),
                    before,
                    "{what}: something was left behind"
                );
                assert!(!Path::new(&evil_abs).exists(), "{what}");
            }
        }
    }

    #[test]
    fn harmless_links_inside_the_source_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let host = host(&root.path().join("tree"));
        let archive = root.path().join("ok.tar");
        fs::write(
            &archive,
            raw_tar(&layout_with(vec![
                Member::dir("./dkms_source_tree/sub/"),
                Member::file("./dkms_source_tree/sub/a.c", b"a"),
                Member::symlink("./dkms_source_tree/sub/up", "../dkms.conf"),
                Member::hard_link("./dkms_source_tree/b.c", "./dkms_source_tree/sub/a.c"),
                Member::file("./dkms_source_tree/sub/a.c", b"replaced"),
            ])),
        )
        .unwrap();
        load_tarball(&host, &archive, false).unwrap();
        let src = root.path().join("tree/src/hello-1.0");
        assert_eq!(
            fs::read_link(src.join("sub/up")).unwrap(),
            Path::new("../dkms.conf")
        );
        assert_eq!(fs::read(src.join("b.c")).unwrap(), b"a");
        assert_eq!(fs::read(src.join("sub/a.c")).unwrap(), b"replaced");
    }
}
