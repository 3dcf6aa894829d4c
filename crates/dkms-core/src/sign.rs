//! Module signing, as dkms does it: the kernel's own `scripts/sign-file`, a Machine
//! Owner Key (MOK) generated once with `openssl`, and the hash the kernel was built for.
//!
//! Signing is left to `sign-file` rather than done in Rust because it is the kernel's
//! definition of the signature format, it ships with every set of headers, and it also
//! understands `pkcs11:` keys. The hash comes from the kernel config, because a kernel
//! only accepts signatures made with the algorithm it was configured for; a kernel
//! without `CONFIG_MODULE_SIG_HASH` does not check signatures and its modules are left
//! unsigned.

use crate::exec::{Command, ExecError};
use crate::fs::{FsError, Root};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `openssl req` needs well under a second for a 2048-bit key; a minute means it hangs
/// (for instance waiting for entropy), and a hook must not wait forever.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(120);

/// `sign-file` hashes one module; even a huge module takes seconds.
const SIGN_TIMEOUT: Duration = Duration::from_secs(120);

/// The subject upstream dkms gives its key; `modinfo -F signer` shows it, and users
/// recognise it in `mokutil --list-enrolled`.
pub const KEY_SUBJECT_CN: &str = "DKMS module signing key";

/// Where Debian's `linux-kbuild-<major.minor>` packages put `scripts/`.
const DEBIAN_KBUILD_ROOT: &str = "/usr/lib";

/// Why a module could not be signed, or a signing key could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key's directory does not exist: dkms's openssl cannot write there either,
    /// and a directory nobody asked for is never created (a typo in framework.conf
    /// must not leave `/no/such/` behind).
    #[error(
        "the signing key {key} does not exist and cannot be generated: its directory is missing; \
         create it, or correct mok_signing_key in framework.conf"
    )]
    KeyNotGenerated { key: PathBuf },
    /// As [`SignError::KeyNotGenerated`], for the certificate.
    #[error(
        "the signing certificate {certificate} does not exist and cannot be generated: its \
         directory is missing; create it, or correct mok_certificate in framework.conf"
    )]
    CertificateNotGenerated { certificate: PathBuf },
    #[error(
        "cannot create a private scratch directory in {dir} for the new signing key: {source}"
    )]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot keep the lone half {file} of the old signing key pair as {kept}: {source}")]
    SetAside {
        file: PathBuf,
        kept: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("generating the signing key {key} and certificate {certificate} failed")]
    Generate {
        key: PathBuf,
        certificate: PathBuf,
        #[source]
        source: ExecError,
    },
    /// openssl exited 0 but did not write what it was asked to (a broken openssl.cnf
    /// can do that); signing with nothing would fail later with a vaguer message.
    #[error("`{command}` succeeded but did not create {missing}")]
    GeneratedNothing { command: String, missing: PathBuf },
    #[error("cannot make the new signing key {key} private (mode 0600): {source}")]
    KeyPermissions {
        key: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move the new signing file {from} to {to}: {source}")]
    Install {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Moving a file of the pair into place failed (the error names it).
    #[error(transparent)]
    Tree(#[from] FsError),
    #[error("signing {module} failed")]
    Sign {
        module: PathBuf,
        #[source]
        source: ExecError,
    },
}

/// The signing key pair: dkms's `mok_signing_key` and `mok_certificate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The private key (PEM), or a `pkcs11:` URI that `sign-file` understands.
    pub key: PathBuf,
    /// The X.509 certificate (DER), the file users enroll with `mokutil --import`.
    pub certificate: PathBuf,
}

impl SigningKey {
    /// The pair the settings name (framework.conf's `mok_signing_key` and
    /// `mok_certificate`), else dkms's defaults `<dkms_tree>/mok.key` and `mok.pub`.
    pub fn configured(settings: &crate::settings::Settings, paths: &crate::paths::Paths) -> Self {
        SigningKey {
            key: settings
                .signing_key
                .clone()
                .unwrap_or_else(|| paths.dkms_tree.join("mok.key")),
            certificate: settings
                .signing_certificate
                .clone()
                .unwrap_or_else(|| paths.dkms_tree.join("mok.pub")),
        }
    }
}

/// The `sign-file` to sign with, or `None` when there is none usable (then modules stay
/// unsigned, as with dkms). See [`sign_file_for`] for which one; it must be an
/// executable file.
pub fn find_sign_file(
    kernel_source_dir: &Path,
    configured: Option<&Path>,
    kernel_release: &str,
) -> Option<PathBuf> {
    let chosen = sign_file_for(kernel_source_dir, configured, kernel_release);
    is_usable_sign_file(&chosen).then_some(chosen)
}

/// The `sign-file` dkms names for `kernel_release` (its `Sign command:` line), usable
/// or not: `configured` (framework.conf's `sign_file`) as it is, else Debian's
/// `/usr/lib/linux-kbuild-<major.minor>/scripts/sign-file` when that file exists, else
/// the headers' `<kernel_source_dir>/scripts/sign-file`. A configured path is never
/// replaced by another: a typo there must show, not be papered over.
pub fn sign_file_for(
    kernel_source_dir: &Path,
    configured: Option<&Path>,
    kernel_release: &str,
) -> PathBuf {
    sign_file_in(
        kernel_source_dir,
        configured,
        kernel_release,
        Path::new(DEBIAN_KBUILD_ROOT),
    )
}

/// [`sign_file_for`] with the directory holding `linux-kbuild-*` as a parameter, so
/// tests need not write to /usr/lib.
fn sign_file_in(
    kernel_source_dir: &Path,
    configured: Option<&Path>,
    kernel_release: &str,
    kbuild_root: &Path,
) -> PathBuf {
    if let Some(configured) = configured {
        return configured.to_path_buf();
    }
    if let Some(series) = major_minor(kernel_release) {
        let kbuild = kbuild_root.join(format!("linux-kbuild-{series}/scripts/sign-file"));
        if kbuild.is_file() {
            return kbuild;
        }
    }
    kernel_source_dir.join("scripts/sign-file")
}

/// Whether `path` can sign: an executable file (symlinks followed: Debian's headers
/// link `scripts` into the kbuild package).
pub fn is_usable_sign_file(path: &Path) -> bool {
    is_executable_file(path)
}

/// `6.1` from `6.1.0-54-amd64`: the version Debian names its kbuild packages after.
fn major_minor(kernel_release: &str) -> Option<String> {
    let (major, rest) = kernel_release.split_once('.')?;
    let minor_len = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let minor = &rest[..minor_len];
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| format!("{major}.{minor}"))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes sure the key pair exists, generating it as upstream dkms does when either file
/// is missing. Returns whether a new pair was made (the caller should then tell the user
/// to enroll the certificate).
///
/// When only one half exists (its partner was deleted), a new pair is generated as
/// upstream does, but the lone half is first renamed to `<name>.old` instead of being
/// overwritten, so a key whose certificate is enrolled is never lost.
///
/// The pair is written into a private temporary directory next to the key and moved into
/// place, so the private key is never readable by others, not even for a moment, and
/// an interrupted run leaves no half-written key. Two files cannot appear in one step:
/// a run killed between them leaves the pair whole in its scratch directory, and the
/// next call finishes the job (see [`finish_interrupted`]). Fails when a file's
/// directory is missing (never created), or when openssl fails or is not installed.
pub fn ensure_signing_key(key: &SigningKey) -> Result<bool, SignError> {
    // sign-file takes PKCS#11 URIs for keys kept in a token; there is no file to check.
    let key_is_uri = key.key.to_str().is_some_and(|k| k.starts_with("pkcs11:"));
    if key_is_uri {
        return Ok(false);
    }
    finish_interrupted(key)?;
    let (key_exists, cert_exists) = (key.key.exists(), key.certificate.exists());
    if key_exists && cert_exists {
        return Ok(false);
    }
    let key_dir = parent_dir(&key.key);
    let cert_dir = parent_dir(&key.certificate);
    if !key_dir.is_dir() {
        return Err(SignError::KeyNotGenerated {
            key: key.key.clone(),
        });
    }
    if !cert_dir.is_dir() {
        return Err(SignError::CertificateNotGenerated {
            certificate: key.certificate.clone(),
        });
    }
    for (exists, lone) in [(key_exists, &key.key), (cert_exists, &key.certificate)] {
        if exists {
            set_aside(lone)?;
        }
    }
    // tempfile creates the directory with mode 0700.
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
        .tempdir_in(key_dir)
        .map_err(|source| SignError::CreateDir {
            dir: key_dir.to_path_buf(),
            source,
        })?;
    let new_key = scratch.path().join(NEW_KEY);
    let new_cert = scratch.path().join(NEW_CERT);

    let subject = format!("/CN={KEY_SUBJECT_CN}");
    let openssl = Command::new("openssl", "generate the module signing key")
        .args(["req", "-new", "-x509", "-nodes", "-days", "36500", "-subj"])
        .arg(&subject)
        .args(["-newkey", "rsa:2048", "-keyout", NEW_KEY])
        .args([
            "-addext",
            "extendedKeyUsage=codeSigning",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(NEW_CERT)
        // Bare names inside the scratch directory, so a relative key path still works.
        .dir(scratch.path())
        .timeout(KEYGEN_TIMEOUT);
    openssl.read().map_err(|source| SignError::Generate {
        key: key.key.clone(),
        certificate: key.certificate.clone(),
        source,
    })?;
    for made in [&new_key, &new_cert] {
        if !made.is_file() {
            return Err(SignError::GeneratedNothing {
                command: openssl.display(),
                missing: made.clone(),
            });
        }
    }

    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&new_key, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| SignError::KeyPermissions {
                key: key.key.clone(),
                source,
            },
        )?;
    }
    // The certificate first: the key appearing is what marks the pair complete. The
    // certificate is linked (or copied), not moved, so that until the key arrives the
    // scratch directory still holds the whole pair.
    place_certificate(&new_cert, &key.certificate)?;
    move_into_place(&new_key, &key.key)?;
    Ok(true)
}

/// Renames the lone half of an old pair to `<name>.old` (replacing an earlier one),
/// through a handle for its directory.
fn set_aside(lone: &Path) -> Result<(), SignError> {
    let mut kept_name = file_name(lone).to_os_string();
    kept_name.push(".old");
    let kept = lone.with_file_name(&kept_name);
    log::info!(
        "keeping the lone {} as {} and generating a new key pair",
        lone.display(),
        kept.display()
    );
    let dir = Root::open(parent_dir(lone))?;
    dir.rename(Path::new(file_name(lone)), Path::new(&kept_name))
        .map_err(|e| SignError::SetAside {
            file: lone.to_path_buf(),
            kept,
            source: io::Error::other(e),
        })
}

/// Prefix of the scratch directory a key pair is generated in, next to the key:
/// `<prefix><pid>-<random>`. The pid tells a live generation from a killed one.
const SCRATCH_PREFIX: &str = ".dkms-signing-key-";
/// The names openssl writes in the scratch directory.
const NEW_KEY: &str = "key.pem";
const NEW_CERT: &str = "cert.der";

/// Finishes or clears what a key generation killed half-way left next to the key. In
/// a scratch directory whose process is gone, a key whose certificate already arrived
/// (the kill came between the two) is moved in, which completes the pair; everything
/// else there is of no use to anyone and is deleted, private key included.
fn finish_interrupted(key: &SigningKey) -> Result<(), SignError> {
    let Ok(entries) = std::fs::read_dir(parent_dir(&key.key)) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(process_alive) {
            continue;
        }
        let scratch = entry.path();
        let new_key = scratch.join(NEW_KEY);
        let same_certificate = matches!(
            (std::fs::read(scratch.join(NEW_CERT)), std::fs::read(&key.certificate)),
            (Ok(a), Ok(b)) if a == b
        );
        if !key.key.exists() && new_key.is_file() && same_certificate {
            log::info!(
                "completing the signing key pair an interrupted run left in {}",
                scratch.display()
            );
            move_into_place(&new_key, &key.key)?;
        }
        if let Ok(dir) = Root::open(parent_dir(&key.key)) {
            let _ = dir.remove(Path::new(&name));
        }
    }
    Ok(())
}

/// Whether `pid` names a running process (this one included: its own generation is
/// not a leftover).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Gives the certificate its place as a second name of the scratch copy (one step,
/// and the scratch keeps it); across file systems, as a copy written atomically
/// through a handle for the certificate's directory.
fn place_certificate(from: &Path, to: &Path) -> Result<(), SignError> {
    let install_error = |source| SignError::Install {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    };
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let bytes = std::fs::read(from).map_err(install_error)?;
            let dir = Root::open(parent_dir(to))?;
            Ok(dir.write(Path::new(file_name(to)), &bytes, 0o644)?)
        }
        Err(e) => Err(install_error(e)),
    }
}

/// The directory a file lives in, `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().unwrap_or_default()
}

/// Renames `from` (in the scratch directory beside `to`) to `to`, through a handle for
/// `to`'s directory: one step, on one file system, never through a symlink below it.
fn move_into_place(from: &Path, to: &Path) -> Result<(), SignError> {
    let dir = parent_dir(to);
    let root = Root::open(dir)?;
    // The scratch directory is a child of `dir` by construction (tempfile may have
    // made its path absolute, so it is named from its last two components).
    let scratch = from.parent().map(file_name).unwrap_or_default();
    let from = Path::new(scratch).join(file_name(from));
    Ok(root.rename(&from, Path::new(file_name(to)))?)
}

/// Signs `module` in place: `sign-file <hash> <key> <certificate> <module>`, exactly as
/// dkms runs it. Fails with the command line, its exit status and the last lines of its
/// output when `sign-file` fails, or when `sign_file` does not exist.
pub fn sign_module(
    sign_file: &Path,
    hash: &str,
    key: &SigningKey,
    module: &Path,
) -> Result<(), SignError> {
    let program = sign_file.to_string_lossy();
    Command::new(&program, "sign kernel modules")
        .arg(hash)
        .arg(&key.key)
        .arg(&key.certificate)
        .arg(module)
        // No working directory of its own, so relative paths mean what the caller meant.
        .timeout(SIGN_TIMEOUT)
        .read()
        .map_err(|source| SignError::Sign {
            module: module.to_path_buf(),
            source,
        })?;
    Ok(())
}

/// A real module built once per test binary, shared by the signing and compression tests.
#[cfg(test)]
pub(crate) mod test_module {
    use crate::exec::Command;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::time::Duration;

    /// The headers of an installed kernel, found (never hard-coded): the newest
    /// `/usr/lib/modules/<release>/build` with a kbuild Makefile and the kernel's
    /// `.config` (every distribution), else Debian's `/usr/src/linux-headers-<release>`.
    /// Only tier (b) tests (`#[ignore = "tier b: ..."]`) call it, and they fail when
    /// no headers are installed: a skipped test proves nothing.
    pub(crate) fn headers() -> &'static Path {
        &installed().1
    }

    /// The release of [`headers`]' kernel, as `uname -r` prints it.
    pub(crate) fn release() -> &'static str {
        &installed().0
    }

    fn installed() -> &'static (String, PathBuf) {
        static FOUND: OnceLock<(String, PathBuf)> = OnceLock::new();
        FOUND.get_or_init(|| {
            let complete =
                |dir: &Path| dir.join("Makefile").is_file() && dir.join(".config").is_file();
            let names = |dir: &str| -> Vec<String> {
                let mut names: Vec<String> = std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok()?.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort_by(|a, b| crate::version::ver_cmp(b, a));
                names
            };
            let from_modules = names("/usr/lib/modules").into_iter().find_map(|release| {
                let build = Path::new("/usr/lib/modules").join(&release).join("build");
                let dir = std::fs::canonicalize(build).ok()?;
                complete(&dir).then_some((release, dir))
            });
            let from_src = || {
                names("/usr/src").into_iter().find_map(|name| {
                    let release = name.strip_prefix("linux-headers-")?.to_string();
                    let dir = Path::new("/usr/src").join(&name);
                    complete(&dir).then_some((release, dir))
                })
            };
            from_modules.or_else(from_src).unwrap_or_else(|| {
                panic!(
                    "tier (b) tests need an installed kernel's headers \
                     (/usr/lib/modules/<release>/build or /usr/src/linux-headers-<release>), \
                     and none were found: install them, or run plain `cargo test` (tier a)"
                )
            })
        })
    }

    /// The bytes of `hello.ko` built from tests/fixtures/hello-1.0 against [`headers`].
    pub(crate) fn hello_ko() -> &'static [u8] {
        static BUILT: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
        match BUILT.get_or_init(build_hello) {
            Ok(bytes) => bytes,
            Err(e) => panic!("building the test module failed: {e}"),
        }
    }

    /// Writes a fresh copy of `hello.ko` into `dir` and returns its path.
    pub(crate) fn write_hello_ko(dir: &Path) -> PathBuf {
        let path = dir.join("hello.ko");
        std::fs::write(&path, hello_ko()).unwrap();
        path
    }

    /// `path` as seen from the current directory (`../../tmp/...`), to check that
    /// relative paths are not resolved against a child's working directory.
    pub(crate) fn relative_to_cwd(path: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let mut relative = PathBuf::new();
        for _ in cwd.components().skip(1) {
            relative.push("..");
        }
        relative.join(path.strip_prefix("/").unwrap())
    }

    fn build_hello() -> Result<Vec<u8>, String> {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hello-1.0");
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        for file in ["hello.c", "Makefile"] {
            std::fs::copy(fixture.join(file), dir.path().join(file))
                .map_err(|e| format!("{}: {e}", fixture.join(file).display()))?;
        }
        Command::new("make", "build the test module")
            .arg("-C")
            .arg(headers())
            .arg(format!("M={}", dir.path().display()))
            .arg("modules")
            .dir(dir.path())
            .timeout(Duration::from_secs(600))
            .read()
            .map_err(|e| e.to_string())?;
        std::fs::read(dir.path().join("hello.ko")).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::test_module::{headers, relative_to_cwd, release, write_hello_ko};
    use super::*;
    use crate::kernel::KernelConfig;
    use std::os::unix::fs::PermissionsExt;

    fn modinfo_field(field: &str, module: &Path) -> String {
        let out = Command::new("modinfo", "read module metadata in tests")
            .args(["-F", field])
            .arg(module)
            .read()
            .unwrap();
        String::from_utf8_lossy(&out).trim().to_string()
    }

    fn write_executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    #[ignore = "tier b: reads the installed kernel headers; scripts/test runs it"]
    fn signature_hash_of_the_installed_headers_is_their_config_line() {
        // Debian's 6.1 kernels sign with sha256, Arch's with sha512: whichever the
        // installed config names.
        let path = headers().join(".config");
        let text = std::fs::read_to_string(&path).unwrap();
        let named = text
            .lines()
            .find_map(|l| l.strip_prefix("CONFIG_MODULE_SIG_HASH="))
            .map(|v| v.trim_matches('"').to_string());
        let config = KernelConfig::read(&path).unwrap();
        assert_eq!(config.signature_hash(), named);
        assert!(named.is_some_and(|h| h.starts_with("sha")));
    }

    #[test]
    fn sign_file_is_the_configured_one_else_debian_kbuild_else_the_headers_as_upstream() {
        let root = tempfile::tempdir().unwrap();
        let headers = root.path().join("headers");
        let kbuild = root.path().join("usr-lib");
        let configured = root.path().join("my-sign-file");
        let in_headers = headers.join("scripts/sign-file");
        let in_kbuild = kbuild.join("linux-kbuild-6.1/scripts/sign-file");
        let named = |configured: Option<&Path>| {
            sign_file_in(&headers, configured, "6.1.0-54-amd64", &kbuild)
        };

        // What upstream's `Sign command:` line names, whether it exists or not.
        assert_eq!(named(None), in_headers);
        write_executable(&in_headers);
        assert_eq!(named(None), in_headers);
        write_executable(&in_kbuild);
        assert_eq!(named(None), in_kbuild, "Debian's kbuild copy comes first");
        // A configured path is kept even when it does not exist (then: not usable).
        assert_eq!(named(Some(&configured)), configured);
        assert!(!is_usable_sign_file(&configured));
        write_executable(&configured);
        assert!(is_usable_sign_file(&configured));
        // Not executable: unusable.
        std::fs::set_permissions(&in_kbuild, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!is_usable_sign_file(&in_kbuild));
    }

    #[test]
    fn debian_kbuild_series_is_major_dot_minor_of_the_release() {
        assert_eq!(major_minor("6.1.0-54-amd64").as_deref(), Some("6.1"));
        assert_eq!(major_minor("6.12.38+deb13-amd64").as_deref(), Some("6.12"));
        assert_eq!(major_minor("6.7-rc1").as_deref(), Some("6.7"));
        assert_eq!(major_minor("6.12.4-arch1-1").as_deref(), Some("6.12"));
        assert_eq!(major_minor("linux"), None);
        assert_eq!(major_minor("x.1"), None);
        assert_eq!(major_minor("6.rc"), None);
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn sign_file_of_the_installed_headers_is_found_through_the_scripts_symlink() {
        // On Debian the kbuild package's copy, which the headers' `scripts` links to.
        let found = find_sign_file(headers(), None, release()).unwrap();
        assert_eq!(
            found.canonicalize().unwrap(),
            headers().join("scripts/sign-file").canonicalize().unwrap()
        );
    }

    #[test]
    fn missing_key_pair_is_generated_as_private_key_and_der_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey {
            key: dir.path().join("state/mok.key"),
            certificate: dir.path().join("state/mok.pub"),
        };
        std::fs::create_dir(dir.path().join("state")).unwrap();
        assert!(ensure_signing_key(&key).unwrap());

        let mode = std::fs::metadata(&key.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = std::fs::read_to_string(&key.key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let der = std::fs::read(&key.certificate).unwrap();
        assert_eq!(
            der.first(),
            Some(&0x30),
            "a DER certificate is an ASN.1 SEQUENCE"
        );
        let subject = Command::new("openssl", "read the test certificate")
            .args([
                "x509",
                "-inform",
                "DER",
                "-noout",
                "-subject",
                "-ext",
                "extendedKeyUsage",
                "-in",
            ])
            .arg(&key.certificate)
            .read()
            .unwrap();
        let subject = String::from_utf8_lossy(&subject);
        assert!(
            subject.contains("CN = DKMS module signing key"),
            "{subject}"
        );
        assert!(subject.contains("Code Signing"), "{subject}");
        // Nothing but the pair is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");

        assert!(
            !ensure_signing_key(&key).unwrap(),
            "an existing pair is kept"
        );
        assert_eq!(std::fs::read(&key.certificate).unwrap(), der);
    }

    #[test]
    fn a_pair_a_killed_run_left_half_in_place_is_completed_and_its_scratch_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey {
            key: dir.path().join("mok.key"),
            certificate: dir.path().join("mok.pub"),
        };
        // No process has this pid: pids stay below pid_max.
        let dead: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!process_alive(dead));
        let scratch = |n: &str| dir.path().join(format!("{SCRATCH_PREFIX}{dead}-{n}"));
        // Killed between the certificate and the key.
        std::fs::create_dir(scratch("a")).unwrap();
        std::fs::write(scratch("a").join(NEW_KEY), "the key").unwrap();
        std::fs::write(scratch("a").join(NEW_CERT), "the certificate").unwrap();
        std::fs::write(&key.certificate, "the certificate").unwrap();
        // Killed earlier, in another run: a key of another pair, to be deleted.
        std::fs::create_dir(scratch("b")).unwrap();
        std::fs::write(scratch("b").join(NEW_KEY), "another key").unwrap();
        std::fs::write(scratch("b").join(NEW_CERT), "another certificate").unwrap();

        assert!(
            !ensure_signing_key(&key).unwrap(),
            "nothing new is generated"
        );
        assert_eq!(std::fs::read_to_string(&key.key).unwrap(), "the key");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 2, "only mok.key and mok.pub are left: {left:?}");
    }

    #[test]
    fn half_a_key_pair_is_regenerated_keeping_the_lone_half_as_old() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey {
            key: dir.path().join("mok.key"),
            certificate: dir.path().join("mok.pub"),
        };
        std::fs::write(&key.key, "old key").unwrap();
        assert!(ensure_signing_key(&key).unwrap());
        assert!(key.certificate.is_file());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mok.key.old")).unwrap(),
            "old key"
        );
        assert!(std::fs::read_to_string(&key.key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));

        std::fs::remove_file(&key.key).unwrap();
        let cert = std::fs::read(&key.certificate).unwrap();
        assert!(ensure_signing_key(&key).unwrap());
        assert_eq!(std::fs::read(dir.path().join("mok.pub.old")).unwrap(), cert);
        assert!(key.key.is_file());
    }

    #[test]
    fn a_key_in_a_missing_directory_is_an_error_and_no_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey {
            key: dir.path().join("no/such/path.key"),
            certificate: dir.path().join("mok.pub"),
        };
        let err = ensure_signing_key(&key).unwrap_err();
        assert!(matches!(err, SignError::KeyNotGenerated { .. }), "{err:?}");
        assert!(err.to_string().contains("mok_signing_key"), "{err}");
        assert!(!dir.path().join("no").exists());

        let cert = SigningKey {
            key: dir.path().join("mok.key"),
            certificate: dir.path().join("no/such/path.crt"),
        };
        let err = ensure_signing_key(&cert).unwrap_err();
        assert!(
            matches!(err, SignError::CertificateNotGenerated { .. }),
            "{err:?}"
        );
        assert!(!dir.path().join("no").exists());
        assert!(!cert.key.exists(), "no half pair is written");
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn real_module_signed_with_generated_key_names_dkms_key_as_signer() {
        let dir = tempfile::tempdir().unwrap();
        let module = write_hello_ko(dir.path());
        assert_eq!(modinfo_field("signer", &module), "", "built unsigned");
        let key = SigningKey {
            key: dir.path().join("mok.key"),
            certificate: dir.path().join("mok.pub"),
        };
        ensure_signing_key(&key).unwrap();
        let config = KernelConfig::read(&headers().join(".config")).unwrap();
        let hash = config.signature_hash().unwrap();
        let sign_file = find_sign_file(headers(), None, release()).unwrap();

        sign_module(&sign_file, &hash, &key, &module).unwrap();

        assert_eq!(modinfo_field("signer", &module), KEY_SUBJECT_CN);
        assert_eq!(modinfo_field("sig_hashalgo", &module), hash);
        assert!(modinfo_field("vermagic", &module).starts_with(release()));
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn relative_key_and_module_paths_resolve_from_the_current_directory() {
        let dir = tempfile::tempdir().unwrap();
        let relative = relative_to_cwd(dir.path());
        let module = relative.join(write_hello_ko(dir.path()).file_name().unwrap());
        let key = SigningKey {
            key: relative.join("mok.key"),
            certificate: relative.join("mok.pub"),
        };
        assert!(ensure_signing_key(&key).unwrap());
        assert!(dir.path().join("mok.key").is_file());
        let sign_file = find_sign_file(headers(), None, release()).unwrap();
        sign_module(&sign_file, "sha256", &key, &module).unwrap();
        assert_eq!(
            modinfo_field("signer", &dir.path().join("hello.ko")),
            KEY_SUBJECT_CN
        );
    }

    #[test]
    #[ignore = "tier b: builds a real module against the installed kernel headers; scripts/test runs it"]
    fn failed_signing_names_the_module_and_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey {
            key: dir.path().join("mok.key"),
            certificate: dir.path().join("mok.pub"),
        };
        ensure_signing_key(&key).unwrap();
        let sign_file = find_sign_file(headers(), None, release()).unwrap();
        let module = dir.path().join("absent.ko");
        let err = sign_module(&sign_file, "sha256", &key, &module).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("absent.ko"), "{chain}");
        assert!(chain.contains("sign-file sha256"), "{chain}");
        assert!(chain.contains("exited with status"), "{chain}");
    }
}
