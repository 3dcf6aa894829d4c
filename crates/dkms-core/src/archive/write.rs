//! `mktarball`: a module version's source and builds as a tarball in upstream's layout,
//! made with `tar::Builder` (GNU headers, GNU long names past 100 bytes) and written to
//! its place atomically.

use super::{write_file, TarballMode};
use crate::compress::{Compression, Encoder};
use crate::engine::{self, io_err, EngineError, Event, Progress};
use crate::fs::{FsError, TEMP_PREFIX};
use crate::host::Host;
use crate::tree;
use std::ffi::OsStr;
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
/// (9) or writing fails (6). `progress` hears what is archived and where the tarball
/// goes.
pub fn make_tarball_with(
    host: &Host,
    module: &str,
    version: &str,
    kernels: &[crate::tree::KernelArch],
    mode: TarballMode,
    archive: Option<&Path>,
    progress: &dyn Progress,
) -> Result<PathBuf, EngineError> {
    let paths = &host.paths;
    engine::require_added(host, module, version)?;
    let (first_kernel, first_arch) = kernels
        .first()
        .map_or(("", ""), |(k, a)| (k.as_str(), a.as_str()));
    host.read_conf(module, version, first_kernel, first_arch)?;

    let mut builds: Vec<(&str, &str, PathBuf)> = Vec::new();
    let mut names = Vec::new();
    for (kernel, arch) in kernels.iter().filter(|_| mode != TarballMode::SourceOnly) {
        let dir = tree::build_dir(paths, module, version, kernel, arch);
        if !tree::layout::modules_of(&dir).is_dir() {
            let (module, version) = (module.into(), version.into());
            let (kernel, arch) = (kernel.to_string(), arch.to_string());
            return Err(EngineError::NotBuiltForArchive {
                module,
                version,
                kernel,
                arch,
            });
        }
        progress.event(Event::ArchivingBuild { kernel, arch });
        names.push(format!("kernel{kernel}-{arch}"));
        if !builds
            .iter()
            .any(|(k, a, _)| *k == kernel.as_str() && *a == arch.as_str())
        {
            builds.push((kernel, arch, dir));
        }
    }
    let kernel_list = match names.join("-") {
        _ if mode == TarballMode::SourceOnly => "source-only".to_string(),
        list if list.len() >= MAX_KERNEL_LIST => "manykernels".to_string(),
        list => list,
    };
    let default_dir = paths.tarball_dir(module, version);
    let dest = match archive.map(|a| (a.parent(), a.file_name())) {
        None => default_dir.join(format!("{module}-{version}-{kernel_list}.dkms.tar.gz")),
        Some((Some(dir), Some(name))) if !dir.as_os_str().is_empty() => dir.join(name),
        Some((_, Some(name))) => default_dir.join(name),
        Some((_, None)) => {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "not a file name");
            let archive = archive.unwrap_or(Path::new("")).into();
            return Err(EngineError::ArchiveWrite { archive, source });
        }
    };
    let compression = compression_for(dest.file_name().unwrap_or_default()).map_err(|format| {
        EngineError::ArchiveCompression {
            archive: dest.clone(),
            format,
        }
    })?;

    let source = paths.source_link(module, version);
    let conf_file = source.join("dkms.conf");
    // Read up front: a missing dkms.conf would make a tarball nothing can load.
    let conf_meta = fs::metadata(&conf_file).map_err(io_err("cannot read", &conf_file))?;
    let source_meta = fs::metadata(&source).map_err(io_err("cannot read", &source))?;
    if mode == TarballMode::BinariesOnly {
        progress.event(Event::ArchivingBinariesOnly);
    } else {
        progress.event(Event::ArchivingSource { source: &source });
    }
    progress.event(Event::TarballLocation { path: &dest });

    let write_error = |source| EngineError::ArchiveWrite {
        archive: dest.clone(),
        source,
    };
    let encoder = Encoder::new(Vec::new(), compression, None).map_err(write_error)?;
    let mut tar = tar::Builder::new(encoder);
    let dir = |tar: &mut Tar, name: &str| append(tar, name, &source_meta, &[]);
    let bytes = (|| {
        dir(&mut tar, "dkms_main_tree/")?;
        let mut kernels_written: Vec<&str> = Vec::new();
        for (kernel, arch, build) in &builds {
            if !kernels_written.contains(kernel) {
                dir(&mut tar, &format!("dkms_main_tree/{kernel}/"))?;
                kernels_written.push(kernel);
            }
            let prefix = format!("dkms_main_tree/{kernel}/{arch}/");
            append(&mut tar, &prefix, &fs::metadata(build)?, &[])?;
            append_tree(&mut tar, Path::new(&prefix), build, progress)?;
        }
        if mode == TarballMode::BinariesOnly {
            dir(&mut tar, "dkms_binaries_only/")?;
            for (name, value) in [("PACKAGE_NAME", module), ("PACKAGE_VERSION", version)] {
                let name = format!("dkms_binaries_only/{name}");
                append(&mut tar, name, &conf_meta, format!("{value}\n").as_bytes())?;
            }
            let conf = fs::read(&conf_file)?;
            append(
                &mut tar,
                "dkms_binaries_only/dkms.conf",
                &conf_meta,
                &conf[..],
            )?;
        } else {
            append(&mut tar, "dkms_source_tree/", &source_meta, &[])?;
            append_tree(&mut tar, Path::new("dkms_source_tree/"), &source, progress)?;
        }
        tar.into_inner()?.finish()
    })()
    .map_err(write_error)?;
    write_file(&paths.dkms_tree, &dest, &bytes).map_err(|e| match e {
        EngineError::Fs(FsError::Io { source, .. } | FsError::NoSpace { source, .. }) => {
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) {
                let dir = dest.parent().unwrap_or(Path::new("/")).into();
                EngineError::ArchiveDirNotWritable { dir, source }
            } else {
                write_error(source)
            }
        }
        other => other,
    })?;
    Ok(dest)
}

/// The compression `tar -a` picks for a file name: by suffix, none when unknown; `Err`
/// names a compression we do not write.
fn compression_for(name: &OsStr) -> Result<Compression, &'static str> {
    let suffixes: [(&[&str], _); 8] = [
        (&[".gz", ".tgz", ".taz"], Ok(Compression::Gzip)),
        (&[".xz", ".txz"], Ok(Compression::Xz)),
        (&[".zst", ".tzst"], Ok(Compression::Zstd)),
        (&[".bz2", ".tbz", ".tbz2", ".tz2", ".tb2"], Err("bzip2")),
        (&[".lzma", ".tlz"], Err("lzma")),
        (&[".lz"], Err("lzip")),
        (&[".lzo"], Err("lzop")),
        (&[".Z", ".taZ"], Err("compress")),
    ];
    let ends = |s: &&str| name.as_bytes().ends_with(s.as_bytes());
    let found = suffixes
        .into_iter()
        .find(|(suffixes, _)| suffixes.iter().any(ends));
    found.map_or(Ok(Compression::None), |(_, compression)| compression)
}

type Tar = tar::Builder<Encoder<Vec<u8>>>;

/// Appends a member named `name` (directories end in `/`, as GNU tar names them) with
/// `meta`'s kind, mode, owner and time, and `data`: files are read whole first, so that
/// the header's size is that of the data even if the file changes meanwhile.
fn append(
    tar: &mut Tar,
    name: impl AsRef<Path>,
    meta: &fs::Metadata,
    data: &[u8],
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, name, data)
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
            let mut dir_name = name.clone().into_os_string();
            dir_name.push("/");
            append(tar, dir_name, &meta, &[])?;
            append_tree(tar, &name, &path, progress)?;
        } else if meta.is_file() {
            append(tar, &name, &meta, &fs::read(&path)?)?;
        } else if meta.is_symlink() {
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_size(0);
            tar.append_link(&mut header, &name, fs::read_link(&path)?)?;
        } else {
            progress.event(Event::LeftOutOfTarball { path: &path });
        }
    }
    Ok(())
}
