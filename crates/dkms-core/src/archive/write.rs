//! `mktarball`: a module version's source and builds as a tarball in upstream's layout,
//! written with `tar::Builder` (GNU headers, GNU long names past 100 bytes) and put in
//! place atomically.

use super::{write_file, TarballMode};
use crate::compress::{Compression, Encoder};
use crate::engine::{fsutil::TEMP_PREFIX, io_err, EngineError, Progress, Silent};
use crate::host::Host;
use crate::paths::Paths;
use crate::tree;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Upstream falls back to `manykernels` when the kernel list reaches this many bytes
/// (`wc -m` of the list plus its newline is more than 200).
const MAX_KERNEL_LIST: usize = 200;

/// Writes a tarball of `module`/`version` with the builds for `kernels` (pairs of
/// kernel and arch; ignored with [`TarballMode::SourceOnly`]) and returns its path.
///
/// `archive` is upstream's `--archive`: its file name replaces the default name and its
/// directory part, if any, the default `<dkms_tree>/<m>/<v>/tarball/`. The caller holds
/// the tree lock: the tarball is written under a temp name that sweeps remove.
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
) -> Result<PathBuf, EngineError> {
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
) -> Result<PathBuf, EngineError> {
    let paths = &host.paths;
    check_added(paths, module, version)?;
    let (first_kernel, first_arch) = kernels.first().cloned().unwrap_or_default();
    host.read_conf(module, version, &first_kernel, &first_arch)?;

    let mut builds: Vec<(&str, &str, PathBuf)> = Vec::new();
    let mut names = Vec::new();
    if mode != TarballMode::SourceOnly {
        for (kernel, arch) in kernels {
            let dir = tree::build_dir(paths, module, version, kernel, arch);
            if !dir.join("module").is_dir() {
                return Err(EngineError::NotBuiltForArchive {
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
    }
    let kernel_list = match names.join("-") {
        _ if mode == TarballMode::SourceOnly => "source-only".to_string(),
        list if list.len() >= MAX_KERNEL_LIST => "manykernels".to_string(),
        list => list,
    };

    let default_dir = paths.version_dir(module, version).join("tarball");
    let dest = match archive {
        None => default_dir.join(format!("{module}-{version}-{kernel_list}.dkms.tar.gz")),
        Some(path) => {
            let name = path.file_name().ok_or_else(|| EngineError::ArchiveWrite {
                archive: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            })?;
            match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) => dir.join(name),
                None => default_dir.join(name),
            }
        }
    };
    let compression = compression_for(dest.file_name().unwrap_or_default()).map_err(|format| {
        EngineError::ArchiveCompression {
            archive: dest.clone(),
            format,
        }
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

    let write_err = |source| EngineError::ArchiveWrite {
        archive: dest.clone(),
        source,
    };
    let mut tar =
        tar::Builder::new(Encoder::new(Vec::new(), compression, None).map_err(write_err)?);
    (|| {
        append_dir(&mut tar, "dkms_main_tree/", None)?;
        let mut kernels_written: Vec<&str> = Vec::new();
        for (kernel, arch, build) in &builds {
            if !kernels_written.contains(kernel) {
                append_dir(&mut tar, format!("dkms_main_tree/{kernel}/"), None)?;
                kernels_written.push(kernel);
            }
            let prefix = format!("dkms_main_tree/{kernel}/{arch}/");
            append_dir(&mut tar, &prefix, Some(&fs::metadata(build)?))?;
            append_tree(&mut tar, Path::new(&prefix), build, progress)?;
        }
        if mode == TarballMode::BinariesOnly {
            append_dir(&mut tar, "dkms_binaries_only/", None)?;
            for (name, value) in [("PACKAGE_NAME", module), ("PACKAGE_VERSION", version)] {
                let data = format!("{value}\n");
                let mut header = header(tar::EntryType::Regular, None);
                header.set_size(data.len() as u64);
                tar.append_data(
                    &mut header,
                    format!("dkms_binaries_only/{name}"),
                    data.as_bytes(),
                )?;
            }
            append_file(
                &mut tar,
                Path::new("dkms_binaries_only/dkms.conf"),
                &conf_file,
            )?;
        } else {
            append_dir(&mut tar, "dkms_source_tree/", Some(&fs::metadata(&source)?))?;
            append_tree(&mut tar, Path::new("dkms_source_tree/"), &source, progress)?;
        }
        tar.into_inner()?.finish()
    })()
    .map_err(write_err)
    .and_then(|bytes| {
        write_file(&paths.dkms_tree, &dest, &bytes).map_err(|e| match e {
            EngineError::Io { source, .. } | EngineError::NoSpace { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                EngineError::ArchiveDirNotWritable {
                    dir: dest.parent().unwrap_or(Path::new("/")).to_path_buf(),
                    source,
                }
            }
            EngineError::Io { source, .. } | EngineError::NoSpace { source, .. } => {
                write_err(source)
            }
            other => other,
        })
    })?;
    Ok(dest)
}

/// Upstream's `is_module_broken` then `is_module_added`, on exact names.
fn check_added(paths: &Paths, module: &str, version: &str) -> Result<(), EngineError> {
    let plain =
        |name: &str| !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
    let not_added = || EngineError::NotAdded {
        module: module.into(),
        version: version.into(),
    };
    if !plain(module) || !plain(version) {
        return Err(not_added());
    }
    let version_dir = paths.version_dir(module, version);
    let link = version_dir.join("source");
    let is_link = link.symlink_metadata().is_ok_and(|m| m.is_symlink());
    let is_dir = link.is_dir();
    let broken = (is_link && !is_dir) || (!is_link && paths.source_dir(module, version).is_dir());
    if version_dir.is_dir() && broken {
        return Err(EngineError::Broken {
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

/// The compression `tar -a` picks for a file name: by suffix, none when unknown; `Err`
/// names a compression we do not write.
fn compression_for(name: &OsStr) -> Result<Compression, &'static str> {
    let name = name.as_bytes();
    let suffixes: [(&[&str], Result<Compression, &'static str>); 8] = [
        (&[".gz", ".tgz", ".taz"], Ok(Compression::Gzip)),
        (&[".xz", ".txz"], Ok(Compression::Xz)),
        (&[".zst", ".tzst"], Ok(Compression::Zstd)),
        (&[".bz2", ".tbz", ".tbz2", ".tz2", ".tb2"], Err("bzip2")),
        (&[".lzma", ".tlz"], Err("lzma")),
        (&[".lz"], Err("lzip")),
        (&[".lzo"], Err("lzop")),
        (&[".Z", ".taZ"], Err("compress")),
    ];
    suffixes
        .into_iter()
        .find(|(ends, _)| ends.iter().any(|s| name.ends_with(s.as_bytes())))
        .map_or(Ok(Compression::None), |(_, compression)| compression)
}

type Tar = tar::Builder<Encoder<Vec<u8>>>;

/// A GNU header of `kind` with `meta`'s mode, owner and time, or root's 0755/0644 and now.
fn header(kind: tar::EntryType, meta: Option<&fs::Metadata>) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    match meta {
        Some(meta) => header.set_metadata_in_mode(meta, tar::HeaderMode::Complete),
        None => {
            header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            header.set_mtime(now.map(|d| d.as_secs()).unwrap_or(0));
        }
    }
    header.set_entry_type(kind);
    header.set_size(0);
    if header.uid().ok() == Some(0) {
        let _ = header.set_username("root");
    }
    if header.gid().ok() == Some(0) {
        let _ = header.set_groupname("root");
    }
    header
}

/// A directory member, named with a trailing `/` as GNU tar names them.
fn append_dir(
    tar: &mut Tar,
    name: impl AsRef<Path>,
    meta: Option<&fs::Metadata>,
) -> io::Result<()> {
    tar.append_data(
        &mut header(tar::EntryType::Directory, meta),
        name,
        io::empty(),
    )
}

/// A file read whole first, so that its size and contents agree even if it changes.
fn append_file(tar: &mut Tar, name: &Path, path: &Path) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    let data = fs::read(path)?;
    let mut header = header(tar::EntryType::Regular, Some(&meta));
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, name, data.as_slice())
}

/// Adds what is in `dir` (recursively, sorted, symlinks as symlinks, our temp names
/// left out) under `prefix`.
fn append_tree(
    tar: &mut Tar,
    prefix: &Path,
    dir: &Path,
    progress: &dyn Progress,
) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file_name = entry.file_name();
        if file_name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
            continue;
        }
        let (path, name) = (entry.path(), prefix.join(&file_name));
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            let mut dir_name = OsString::from(name.as_os_str());
            dir_name.push("/");
            append_dir(tar, &dir_name, Some(&meta))?;
            append_tree(tar, &name, &path, progress)?;
        } else if meta.is_file() {
            append_file(tar, &name, &path)?;
        } else if meta.is_symlink() {
            let target = fs::read_link(&path)?;
            tar.append_link(
                &mut header(tar::EntryType::Symlink, Some(&meta)),
                &name,
                target,
            )?;
        } else {
            progress.warn(&format!(
                "{}: not a file, directory or symlink; left out of the tarball",
                path.display()
            ));
        }
    }
    Ok(())
}
