//! dkms.conf cases, each evaluated by real bash through [`evaluate`].

use super::eval::EVAL_SCRIPT;
use super::*;
use std::time::Duration;

const KERNEL: &str = "6.1.0-54-amd64";

/// A dkms.conf in a temp dir, plus optional override files, evaluated for `kernel`.
struct Case {
    dir: tempfile::TempDir,
    kernel: String,
    arch: String,
    dest_override: Option<String>,
    timeout: Duration,
    directives: Vec<(String, String)>,
    caller_env: crate::environment::CallerEnv,
    /// Evaluate behind a trust gate, as the binary does when run as root.
    gated: bool,
}

impl Case {
    fn new(conf: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("src/dkms.conf"), conf).unwrap();
        Case {
            dir,
            kernel: KERNEL.into(),
            arch: "x86_64".into(),
            dest_override: None,
            timeout: Duration::from_secs(10),
            directives: Vec::new(),
            gated: false,
            caller_env: Default::default(),
        }
    }

    fn caller_env(mut self, vars: &[(&str, &str)]) -> Case {
        self.caller_env =
            crate::environment::CallerEnv::new(vars.iter().map(|(n, v)| (n.into(), v.into())));
        self
    }

    fn gated(mut self) -> Case {
        self.gated = true;
        self
    }

    fn kernel(mut self, kernel: &str) -> Case {
        self.kernel = kernel.into();
        self
    }

    fn arch(mut self, arch: &str) -> Case {
        self.arch = arch.into();
        self
    }

    fn on_arch_linux(mut self) -> Case {
        self.dest_override = Some("/updates/dkms".into());
        self
    }

    fn override_file(self, name: &str, text: &str) -> Case {
        std::fs::write(self.dir.path().join("etc").join(name), text).unwrap();
        self
    }

    fn kernel_config(self, text: &str) -> Case {
        std::fs::write(self.dir.path().join(".config"), text).unwrap();
        self
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("src/dkms.conf")
    }

    fn eval(&self) -> Result<DkmsConf, String> {
        evaluate(&self.conf_path(), &self.context()).map_err(|e| e.to_string())
    }

    fn ok(&self) -> DkmsConf {
        self.eval()
            .unwrap_or_else(|e| panic!("expected a valid dkms.conf, got: {e}"))
    }

    /// Asserts evaluation fails with an error naming the file and containing `parts`.
    fn err(&self, parts: &[&str]) -> String {
        let err = match self.eval() {
            Ok(conf) => panic!("expected an error, got {conf:#?}"),
            Err(e) => e,
        };
        assert!(
            err.contains(&self.conf_path().display().to_string()) || err.contains("/etc/"),
            "error does not name the file: {err}"
        );
        for part in parts {
            assert!(err.contains(part), "error {err:?} lacks {part:?}");
        }
        err
    }
}

fn names(conf: &DkmsConf) -> Vec<(String, String, String, String)> {
    conf.modules
        .iter()
        .map(|m| {
            (
                m.built_location.clone(),
                m.built_name.clone(),
                m.dest_location.clone(),
                m.dest_name.clone(),
            )
        })
        .collect()
}

const SINGLE: &str = r#"
PACKAGE_NAME="foo"
PACKAGE_VERSION="1.0"
DEST_MODULE_LOCATION[0]="/extra"
"#;

#[test]
fn a_single_module_defaults_its_name_to_the_package() {
    let conf = Case::new(SINGLE).ok();
    assert_eq!(conf.package_name, "foo");
    assert_eq!(conf.package_version, "1.0");
    assert_eq!(
        names(&conf),
        [("".into(), "foo".into(), "/extra".into(), "foo".into())]
    );
    assert!(conf.modules[0].strip);
    assert!(!conf.autoinstall);
    assert_eq!(conf.make_command, None);
}

#[test]
fn arrays_describe_several_modules_with_locations() {
    let conf = Case::new(
        r#"
PACKAGE_NAME=pair
PACKAGE_VERSION=2.1
BUILT_MODULE_NAME[0]=alpha
BUILT_MODULE_LOCATION[0]=src
DEST_MODULE_LOCATION[0]=/kernel/drivers/misc
BUILT_MODULE_NAME[1]=beta
BUILT_MODULE_LOCATION[1]=sub/dir/
DEST_MODULE_NAME[1]=beta_renamed
DEST_MODULE_LOCATION[1]=/extra
STRIP[0]=no
AUTOINSTALL=Yes
"#,
    )
    .ok();
    assert_eq!(
        names(&conf),
        [
            (
                "src/".into(),
                "alpha".into(),
                "/kernel/drivers/misc".into(),
                "alpha".into()
            ),
            (
                "sub/dir/".into(),
                "beta".into(),
                "/extra".into(),
                "beta_renamed".into()
            ),
        ]
    );
    // STRIP[1] is empty, so it follows STRIP[0] as upstream does.
    assert_eq!(
        conf.modules.iter().map(|m| m.strip).collect::<Vec<_>>(),
        [false, false]
    );
    assert!(conf.autoinstall);
}

#[test]
fn a_for_loop_can_fill_the_module_arrays() {
    let conf = Case::new(
        r#"
PACKAGE_NAME=zfs
PACKAGE_VERSION=2.2.0
i=0
for m in spl zavl znvpair zfs; do
    BUILT_MODULE_NAME[$i]=$m
    BUILT_MODULE_LOCATION[$i]=module/$m
    DEST_MODULE_LOCATION[$i]=/extra
    i=$((i + 1))
done
"#,
    )
    .ok();
    let built: Vec<&str> = conf.modules.iter().map(|m| m.built_name.as_str()).collect();
    assert_eq!(built, ["spl", "zavl", "znvpair", "zfs"]);
    assert_eq!(conf.modules[3].built_location, "module/zfs/");
}

#[test]
fn per_kernel_if_else_sees_kernelver_and_arch() {
    let text = r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
DEST_MODULE_LOCATION[0]=/extra
if [[ $kernelver == 6.1.0-53* ]]; then
    MAKE[0]="make OLD=1 -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build"
else
    MAKE[0]="make NEW=1 ARCH=$arch"
fi
"#;
    let old = Case::new(text).kernel("6.1.0-53-amd64").ok();
    assert!(old
        .make_command
        .as_deref()
        .unwrap()
        .starts_with("make OLD=1 -C "));
    assert!(old
        .make_command
        .as_deref()
        .unwrap()
        .ends_with("/dkms/foo/1.0/build"));
    let new = Case::new(text).arch("aarch64").ok();
    assert_eq!(new.make_command.as_deref(), Some("make NEW=1 ARCH=aarch64"));
}

#[test]
fn make_match_picks_the_last_matching_command() {
    let text = r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
DEST_MODULE_LOCATION[0]=/extra
MAKE[0]="make zero"
MAKE_MATCH[0]="^5\."
MAKE[1]="make one"
MAKE_MATCH[1]="^6\.1"
MAKE[2]="make two"
MAKE_MATCH[2]="-amd64$"
"#;
    assert_eq!(
        Case::new(text).ok().make_command.as_deref(),
        Some("make two")
    );
    assert_eq!(
        Case::new(text)
            .kernel("6.1.0-1-arm64")
            .ok()
            .make_command
            .as_deref(),
        Some("make one")
    );
    assert_eq!(Case::new(text).kernel("4.19.0").ok().make_command, None);
}

#[test]
fn patches_follow_patch_match_and_may_not_leave_the_source() {
    let text = r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
DEST_MODULE_LOCATION[0]=/extra
PATCH[0]=always.patch
PATCH[1]=old-only.patch
PATCH_MATCH[1]="^5\."
PATCH[2]=new-only.patch
PATCH_MATCH[2]="^6\."
"#;
    assert_eq!(
        Case::new(text).ok().patches,
        ["always.patch", "new-only.patch"]
    );
    Case::new(&format!("{SINGLE}PATCH[0]=../../etc/evil.patch\n")).err(&["PATCH", "'..'"]);
}

#[test]
fn crlf_files_evaluate_like_lf_files() {
    let text = SINGLE.replace('\n', "\r\n")
        + "if [[ $kernelver == 6.* ]]; then\r\n  MAKE[0]=\"make crlf\"\r\nfi\r\n";
    let conf = Case::new(&text).ok();
    assert_eq!(conf.package_name, "foo");
    assert_eq!(conf.modules[0].dest_location, "/extra");
    assert_eq!(conf.make_command.as_deref(), Some("make crlf"));
}

#[test]
fn sparse_module_arrays_are_errors() {
    Case::new(
        r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
BUILT_MODULE_NAME[0]=a
BUILT_MODULE_NAME[2]=c
DEST_MODULE_LOCATION[0]=/extra
DEST_MODULE_LOCATION[1]=/extra
DEST_MODULE_LOCATION[2]=/extra
"#,
    )
    .err(&[
        "BUILT_MODULE_NAME[1]",
        "is missing",
        "no entry for this module",
    ]);
}

#[test]
fn module_arrays_of_different_lengths_are_errors() {
    Case::new(
        r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
BUILT_MODULE_NAME[0]=a
BUILT_MODULE_NAME[1]=b
DEST_MODULE_LOCATION[0]=/extra
"#,
    )
    .err(&["DEST_MODULE_LOCATION[1]", "no entry for this module"]);
}

/// The rules a case breaks, in the order the error lists them.
fn broken_rules(case: &Case) -> Vec<Option<UpstreamRule>> {
    match evaluate(&case.conf_path(), &case.context()) {
        Err(ConfError::Invalid { problems, .. }) => problems.into_iter().map(|p| p.rule).collect(),
        other => panic!("expected an invalid dkms.conf, got {other:?}"),
    }
}

#[test]
fn every_problem_is_reported_in_upstreams_order_not_only_the_first() {
    use UpstreamRule as R;
    // Upstream's test/dkms_conf_test_invalid, checked by its run_test.sh.
    let case = Case::new(
        r#"
PACKAGE_NAME="dkms_conf_test"
PACKAGE_VERSION="1.0"
DEST_MODULE_NAME[0]="bar.ko"
DEST_MODULE_LOCATION="/wrong/path"
BUILT_MODULE_NAME[1]="bar.o"
DEST_MODULE_NAME[1]="foo"
AUTOINSTALL="maybe"
"#,
    );
    assert_eq!(
        broken_rules(&case),
        [
            Some(R::NoBuiltModuleName { record: 0 }),
            Some(R::DestModuleNameSuffix { record: 0 }),
            Some(R::DestModuleLocationPrefix { record: 0 }),
            Some(R::BuiltModuleNameSuffix { record: 1 }),
            Some(R::NoDestModuleLocation { record: 1 }),
            Some(R::UnsupportedValue {
                name: "AUTOINSTALL".into(),
                value: "maybe".into()
            }),
        ]
    );
    // The one-line message names them all.
    case.err(&["BUILT_MODULE_NAME[0]", "; also: ", "'maybe'"]);
    assert_eq!(
        broken_rules(&Case::new("")),
        [Some(R::NoPackageName), Some(R::NoPackageVersion)]
    );
    // Duplicates are looked for only once nothing else is wrong, as upstream's
    // read_conf_strict; a DEST_MODULE_NAME counts twice whatever the locations.
    let dup = "PACKAGE_NAME=d\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME=(d d)\nDEST_MODULE_LOCATION=(/kernel/extra /updates)\n";
    assert_eq!(
        broken_rules(&Case::new(dup)),
        [
            Some(R::DuplicateBuiltModule {
                module: "d".into(),
                record: 1
            }),
            Some(R::DuplicateDestModule {
                module: "d".into(),
                record: 1
            }),
        ]
    );
    assert_eq!(
        broken_rules(&Case::new(&format!("{dup}AUTOINSTALL=perhaps\n"))),
        [Some(R::UnsupportedValue {
            name: "AUTOINSTALL".into(),
            value: "perhaps".into()
        })]
    );
}

#[test]
fn missing_package_name_or_version_is_an_error_with_the_fix() {
    Case::new("PACKAGE_VERSION=1\nDEST_MODULE_LOCATION[0]=/extra\n").err(&[
        "PACKAGE_NAME",
        "is missing",
        "add PACKAGE_NAME=",
    ]);
    Case::new("PACKAGE_NAME=foo\nDEST_MODULE_LOCATION[0]=/extra\n")
        .err(&["PACKAGE_VERSION", "is missing"]);
    Case::new("").err(&["PACKAGE_NAME"]);
}

#[test]
fn module_names_with_a_ko_or_o_suffix_are_errors() {
    Case::new(&format!("{SINGLE}BUILT_MODULE_NAME[0]=foo.ko\n")).err(&[
        "BUILT_MODULE_NAME[0]",
        "'foo.ko'",
        "without its suffix",
    ]);
    Case::new(&format!("{SINGLE}DEST_MODULE_NAME[0]=foo.o\n"))
        .err(&["DEST_MODULE_NAME[0]", "'foo.o'"]);
}

#[test]
fn dest_module_location_must_start_with_kernel_updates_or_extra() {
    Case::new("PACKAGE_NAME=foo\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION[0]=/lib/evil\n").err(&[
        "DEST_MODULE_LOCATION[0]",
        "'/lib/evil'",
        "/kernel, /updates or /extra",
    ]);
    Case::new("PACKAGE_NAME=foo\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION[0]=/extra/../../../etc\n")
        .err(&["DEST_MODULE_LOCATION[0]", "'..'"]);
    Case::new("PACKAGE_NAME=foo\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=foo\n")
        .err(&["DEST_MODULE_LOCATION[0]", "is missing"]);
}

#[test]
fn arch_and_debian_install_to_updates_dkms_whatever_dkms_conf_says() {
    let conf = Case::new(
        "PACKAGE_NAME=foo\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION[0]=/kernel/drivers/net\n",
    )
    .on_arch_linux()
    .ok();
    assert_eq!(conf.modules[0].dest_location, "/updates/dkms");
    assert_eq!(
        conf.modules[0].declared_dest_location,
        "/kernel/drivers/net"
    );
}

#[test]
fn duplicate_module_names_are_errors() {
    Case::new(
        r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
BUILT_MODULE_NAME=(a a)
DEST_MODULE_LOCATION=(/extra /updates)
"#,
    )
    .err(&["BUILT_MODULE_NAME[1]", "listed twice"]);
    Case::new(
        r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
BUILT_MODULE_NAME=(a b)
DEST_MODULE_NAME=(same same)
DEST_MODULE_LOCATION=(/extra /extra)
"#,
    )
    .on_arch_linux()
    .err(&["DEST_MODULE_NAME[1]", "installed twice"]);
}

#[test]
fn values_are_expanded_a_second_time_as_dkms_does() {
    // dkms echoes every value unquoted and sources it back inside double quotes:
    // quotes inside a value disappear, whitespace collapses, a single-quoted
    // `${kernelver}` expands at read time, and an embedded "a b" breaks the
    // assignment, leaving the directive unset (measured on dkms 3.4.3).
    let conf = Case::new(&format!(
        "{SINGLE}POST_INSTALL=\"echo 'it''s' \\\"quoted\\\"\"\nPRE_BUILD=$'line one\\n  line two\\0'\nPOST_BUILD='post ${{kernelver}} \\$arch'\nMAKE[0]='make CFLAGS=\"-O2 -g\"'\n"
    ))
    .ok();
    assert_eq!(conf.post_install.as_deref(), Some("echo 'it''s' quoted"));
    assert_eq!(conf.pre_build.as_deref(), Some("line one line two"));
    assert_eq!(
        conf.post_build.as_deref(),
        Some("post 6.1.0-54-amd64 $arch")
    );
    assert_eq!(conf.make_command, None);
}

#[test]
fn the_callers_environment_is_seen_but_not_its_compiler_flags() {
    let text = format!(
        "{SINGLE}PRE_BUILD=\"configure $(echo --host=\\\"${{CROSS_COMPILE%-}}\\\") cc=$CC cflags=$CFLAGS\"\n"
    );
    let conf = Case::new(&text)
        .caller_env(&[
            ("CROSS_COMPILE", "x86_64-linux-gnu-"),
            ("CC", "clang"),
            ("CFLAGS", "-O0"),
            ("PATH", crate::exec::SYSTEM_PATH),
        ])
        .ok();
    assert_eq!(
        conf.pre_build.as_deref(),
        Some("configure --host=x86_64-linux-gnu cc= cflags=")
    );
}

#[test]
fn zfs_style_configure_options_lose_their_quotes_and_helpers_vanish() {
    // zfs-dkms 2.1.11's PRE_BUILD: `\"` inside `$(...)` is a literal quote, so the
    // tests are always true and `--host=""` comes out; the round trip turns it into an
    // argument with an empty value. A helper variable is gone by then.
    let conf = Case::new(&format!(
        r#"{SINGLE}HELPER=hh
PRE_BUILD="configure
  --with-linux=${{kernel_source_dir}}
  $(
    [[ -n \"${{CROSS_COMPILE}}\" ]] && \
    {{
      echo --host=\"${{CROSS_COMPILE%-}}\"
    }}
  )
"
POST_BUILD='post.sh -k ${{kernelver}} -h ${{HELPER}} -x'
"#
    ))
    .ok();
    let pre_build = conf.pre_build.unwrap();
    assert!(
        pre_build.starts_with("configure --with-linux=/")
            && pre_build.ends_with("/headers --host= "),
        "{pre_build:?}"
    );
    assert_eq!(
        conf.post_build.as_deref(),
        Some("post.sh -k 6.1.0-54-amd64 -h  -x")
    );
}

#[test]
fn override_files_in_the_etc_dir_apply_in_order_of_specificity() {
    let conf = Case::new(&format!(
        "{SINGLE}MAKE[0]=base\nPOST_BUILD=base\nPRE_BUILD=base\n"
    ))
    .override_file(
        "foo.conf",
        "MAKE[0]=module\nPOST_BUILD=module\nPRE_BUILD=module\n",
    )
    .override_file("foo-1.0.conf", "POST_BUILD=version\nPRE_BUILD=version\n")
    .override_file(
        &format!("foo-1.0-{KERNEL}.conf"),
        "PRE_BUILD=\"kernel $PRE_BUILD\"\n",
    )
    .override_file("foo-9.9.conf", "MAKE[0]=other-version\n")
    .ok();
    assert_eq!(conf.make_command.as_deref(), Some("module"));
    assert_eq!(conf.post_build.as_deref(), Some("version"));
    assert_eq!(conf.pre_build.as_deref(), Some("kernel version"));
}

#[test]
fn helper_functions_and_variables_do_not_leak_into_override_files() {
    let conf = Case::new(&format!("{SINGLE}helper=secret\nPOST_BUILD=x\n"))
        .override_file("foo.conf", "POST_BUILD=\"[$helper]\"\n")
        .ok();
    assert_eq!(conf.post_build.as_deref(), Some("[]"));
}

#[test]
fn yes_no_directives_reject_other_words() {
    assert!(
        Case::new(&format!("{SINGLE}AUTOINSTALL=YES\n"))
            .ok()
            .autoinstall
    );
    assert!(
        !Case::new(&format!("{SINGLE}AUTOINSTALL=no\n"))
            .ok()
            .autoinstall
    );
    Case::new(&format!("{SINGLE}AUTOINSTALL=true\n")).err(&["AUTOINSTALL", "'true'", "\"yes\""]);
    Case::new(&format!("{SINGLE}NO_WEAK_MODULES=1\n")).err(&["NO_WEAK_MODULES"]);
    Case::new(&format!("{SINGLE}STRIP[0]=maybe\n")).err(&["STRIP[0]", "'maybe'"]);
}

#[test]
fn deprecated_directives_are_accepted_with_a_warning() {
    let conf = Case::new(&format!(
        "{SINGLE}CLEAN=\"make clean\"\nREMAKE_INITRD=yes\nMODULES_CONF[0]=x\n"
    ))
    .ok();
    let deprecated: Vec<&str> = conf
        .deprecations
        .iter()
        .map(|d| d.directive.as_str())
        .collect();
    assert_eq!(deprecated, ["CLEAN", "REMAKE_INITRD", "MODULES_CONF"]);
    assert!(Case::new(&format!("{SINGLE}CLEAN=true\n"))
        .ok()
        .deprecations
        .is_empty());
}

#[test]
fn build_depends_lists_module_names() {
    let conf = Case::new(&format!(
        "{SINGLE}BUILD_DEPENDS=(spl \"icp zcommon\")\nBUILD_DEPENDS_REBUILD=yes\n"
    ))
    .ok();
    assert_eq!(conf.build_depends, ["spl", "icp", "zcommon"]);
    assert!(conf.build_depends_rebuild);
}

#[test]
fn build_exclusive_kernel_is_a_bash_regex() {
    let text = format!("{SINGLE}BUILD_EXCLUSIVE_KERNEL=\"^6\\.1\\.0-5[34]-\"\n");
    assert_eq!(Case::new(&text).ok().excluded, None);
    let excluded = Case::new(&text)
        .kernel("6.12.4-arch1-1")
        .ok()
        .excluded
        .unwrap();
    assert!(excluded.contains("BUILD_EXCLUSIVE_KERNEL"), "{excluded}");
    // In POSIX ERE `\d` is a literal `d`, unlike Perl-style regexes.
    assert!(
        Case::new(&format!("{SINGLE}BUILD_EXCLUSIVE_KERNEL=\"^\\d\"\n"))
            .ok()
            .excluded
            .is_some()
    );
    Case::new(&format!("{SINGLE}BUILD_EXCLUSIVE_KERNEL=\"(\"\n"))
        .err(&["BUILD_EXCLUSIVE_KERNEL[0]", "regular expression"]);
}

#[test]
fn build_exclusive_min_max_compare_like_upstream_ver() {
    let text =
        format!("{SINGLE}BUILD_EXCLUSIVE_KERNEL_MIN=6.1.0-54\nBUILD_EXCLUSIVE_KERNEL_MAX=6.6\n");
    assert_eq!(Case::new(&text).ok().excluded, None);
    assert!(Case::new(&text)
        .kernel("6.1.0-53-amd64")
        .ok()
        .excluded
        .unwrap()
        .contains("older"));
    assert!(Case::new(&text)
        .kernel("6.7.1")
        .ok()
        .excluded
        .unwrap()
        .contains("newer"));
    // OBSOLETE_BY still works, as a maximum.
    let conf = Case::new(&format!("{SINGLE}OBSOLETE_BY=6.0\n")).ok();
    assert!(conf.excluded.unwrap().contains("newer"));
    assert_eq!(conf.deprecations[0].directive, "OBSOLETE_BY");
}

#[test]
fn build_exclusive_arch_and_config() {
    let conf = Case::new(&format!(
        "{SINGLE}BUILD_EXCLUSIVE_ARCH=\"^(aarch64|arm64)$\"\n"
    ))
    .ok();
    assert!(conf.excluded.unwrap().contains("x86_64"));
    let text = format!("{SINGLE}BUILD_EXCLUSIVE_CONFIG=\"CONFIG_PCI !CONFIG_FOO\"\n");
    assert_eq!(
        Case::new(&text)
            .kernel_config("CONFIG_PCI=y\n# CONFIG_FOO is not set\n")
            .ok()
            .excluded,
        None
    );
    let reason = Case::new(&text)
        .kernel_config("CONFIG_PCI=y\nCONFIG_FOO=m\n")
        .ok()
        .excluded
        .unwrap();
    assert!(reason.contains("CONFIG_FOO"), "{reason}");
}

#[test]
fn per_module_build_exclusive_excludes_only_that_module() {
    let conf = Case::new(
        r#"
PACKAGE_NAME=foo
PACKAGE_VERSION=1.0
BUILT_MODULE_NAME=(a b)
DEST_MODULE_LOCATION=(/extra /extra)
BUILD_EXCLUSIVE_ARCH[1]="^aarch64$"
"#,
    )
    .ok();
    assert_eq!(conf.excluded, None);
    assert!(conf.modules[0].excluded.is_none());
    assert!(conf.modules[1]
        .excluded
        .as_deref()
        .unwrap()
        .contains("BUILD_EXCLUSIVE_ARCH[1]"));
}

#[test]
fn a_dkms_conf_that_exits_is_an_error() {
    Case::new(&format!("{SINGLE}exit 3\n")).err(&["exited the shell"]);
}

#[test]
fn a_syntax_error_names_the_line() {
    Case::new("PACKAGE_NAME=foo\nPACKAGE_VERSION=1\nif then fi\n")
        .err(&["bash could not parse it", "line 3"]);
}

#[test]
fn a_dkms_conf_that_loops_times_out() {
    let mut case = Case::new(&format!("{SINGLE}while :; do :; done\n"));
    case.timeout = Duration::from_millis(300);
    let err = case.eval().unwrap_err();
    assert!(err.contains("took longer than"), "{err:?}");
}

#[test]
fn names_with_whitespace_or_slashes_are_errors() {
    Case::new("PACKAGE_NAME='my mod'\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION[0]=/extra\n")
        .err(&["PACKAGE_NAME", "whitespace"]);
    Case::new("PACKAGE_NAME=foo\nPACKAGE_VERSION=../1\nDEST_MODULE_LOCATION[0]=/extra\n")
        .err(&["PACKAGE_VERSION", "path"]);
    Case::new(&format!("{SINGLE}BUILT_MODULE_LOCATION[0]=/abs\n"))
        .err(&["BUILT_MODULE_LOCATION[0]", "leaves its directory"]);
}

impl Case {
    fn context(&self) -> EvalContext {
        let root = self.dir.path();
        EvalContext {
            kernelver: self.kernel.clone(),
            arch: self.arch.clone(),
            kernel_source_dir: root.join("headers"),
            kernel_config: root.join(".config"),
            kernel_configs: Default::default(),
            dkms_tree: root.join("dkms"),
            source_tree: root.join("src"),
            install_tree: root.join("modules"),
            module: "foo".into(),
            module_version: "1.0".into(),
            etc_dir: root.join("etc"),
            dest_location_override: self.dest_override.clone(),
            timeout: self.timeout,
            etc_entries: None,
            directives: self.directives.clone(),
            caller_env: self.caller_env.clone(),
            scratch_dir: root.to_path_buf(),
            trust: self.gated.then(|| {
                crate::trust::Gate::new(&root.join("src"), &root.join("etc"), &root.join("dkms"))
            }),
            prepared: None,
            builder: crate::sandbox::Builder::Caller,
        }
    }

    /// The static evaluator's result, if the file is in its subset.
    fn fast(&self) -> Option<RawConf> {
        let text = std::fs::read(self.conf_path()).unwrap();
        fast::evaluate(&self.conf_path(), &text, &self.context())
    }

    fn bash(&self) -> RawConf {
        evaluate_with_bash(&self.conf_path(), &self.context()).unwrap()
    }
}

#[test]
fn plain_assignment_files_evaluate_without_bash_exactly_as_bash_does() {
    let cases = [
        SINGLE.to_string(),
        SINGLE.replace('\n', "\r\n"),
        r#"
# a comment
PACKAGE_NAME="nvidia"   # trailing comment
PACKAGE_VERSION=550.54.14
BUILT_MODULE_NAME[0]="nvidia"
BUILT_MODULE_NAME[1]='nvidia-uvm'
DEST_MODULE_LOCATION[0]="/kernel/drivers/video"
DEST_MODULE_LOCATION[1]=/kernel/drivers/video
MAKE[0]="make -C ${kernel_source_dir} M=$dkms_tree/$module/$module_version/build KVER=$kernelver ARCH=$arch"
CLEAN="make clean"
AUTOINSTALL=yes
  BUILD_EXCLUSIVE_KERNEL="^6\.[0-9]+\.\d"
BUILD_EXCLUSIVE_ARCH='x86_64|i.86'
MAKE_MATCH[0]="(^6\.1)"
PATCH[0]=fix-$PACKAGE_VERSION.patch
PATCH_MATCH[0]="["
POST_INSTALL="echo done \\x 'single'"
STRIP[0]=n
"#
        .to_string(),
        // Array literals, the way BUILD_DEPENDS is usually written.
        format!(
            "{SINGLE}BUILD_DEPENDS=(\"spl\")\nBUILT_MODULE_NAME=(a 'b' \"c-$kernelver\")  # three\n\
             DEST_MODULE_LOCATION[5]=/x\nDEST_MODULE_LOCATION=(/extra)\nPATCH=()\nMAKE=( )\n\
             X=(first second)\nCLEAN=\"$X\"\n"
        ),
    ];
    for text in cases {
        let case = Case::new(&text);
        let fast = case
            .fast()
            .unwrap_or_else(|| panic!("not in the fast subset:\n{text}"));
        let bash = case.bash();
        assert_eq!(fast.values, bash.values, "values differ for:\n{text}");
        assert_eq!(
            fast.matches, bash.matches,
            "regex matches differ for:\n{text}"
        );
    }
}

#[test]
fn anything_beyond_plain_assignments_goes_to_bash() {
    for text in [
        "PACKAGE_NAME=$(echo foo)\n",
        "PACKAGE_NAME=`echo foo`\n",
        "BUILT_MODULE_NAME=(a\nb)\n",
        "BUILT_MODULE_NAME=([1]=a)\n",
        "BUILT_MODULE_NAME[0]=(a)\n",
        "BUILT_MODULE_NAME=(a*)\n",
        "BUILT_MODULE_NAME=(a) b\n",
        "BUILT_MODULE_NAME=(a)b\n",
        "for m in a; do BUILT_MODULE_NAME[0]=$m; done\n",
        "PACKAGE_NAME=${UNKNOWN:-x}\n",
        "PACKAGE_NAME=$HOME\n",
        "A=1 B=2\n",
        "PACKAGE_NAME=foo; PACKAGE_VERSION=1\n",
        "PACKAGE_NAME=~/x\n",
        "PACKAGE_NAME=\"unterminated\n\"\n",
        "source /etc/x\n",
        // dkms expands values a second time (eval.sh's round trip): these change there.
        "POST_INSTALL=\"echo \\\"done\\\" \\$HOME\"\n",
        "POST_INSTALL='echo ${kernelver}'\n",
        "POST_INSTALL='a  b'\n",
        "POST_INSTALL='a\\\\b'\n",
        "POST_INSTALL='a b*'\n",
    ] {
        assert!(
            Case::new(text).fast().is_none(),
            "wrongly taken as plain:\n{text}"
        );
    }
    let with_override = Case::new(SINGLE).override_file("foo.conf", "MAKE[0]=x\n");
    assert!(with_override.fast().is_none(), "override files need bash");
}

#[test]
fn eval_script_reads_back_every_directive() {
    for name in DIRECTIVES {
        assert!(
            EVAL_SCRIPT.contains(&format!(" {name}")),
            "eval.sh does not list {name}"
        );
    }
}

#[test]
fn a_timed_out_evaluation_leaves_no_process_behind() {
    let mut case = Case::new(&format!("{SINGLE}while :; do :; done\n"));
    // The conf file's path is on the evaluating shell's command line.
    let marker = case.dir.path().display().to_string();
    case.timeout = Duration::from_millis(200);
    assert!(case.eval().unwrap_err().contains("took longer than"));
    std::thread::sleep(Duration::from_millis(100));
    let leftovers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(&marker))
        .count();
    assert_eq!(leftovers, 0, "the looping dkms.conf is still running");
}

#[test]
fn command_line_directives_override_the_dkms_conf() {
    let mut case = Case::new(&format!(
        "{SINGLE}MAKE[0]=\"make from-conf\"\nAUTOINSTALL=no\n"
    ));
    case.directives = vec![
        ("MAKE".into(), "make from-command-line".into()),
        ("AUTOINSTALL".into(), "yes".into()),
        ("BUILD_EXCLUSIVE_KERNEL".into(), "^5\\.".into()),
    ];
    let conf = case.ok();
    assert_eq!(conf.make_command.as_deref(), Some("make from-command-line"));
    assert!(conf.autoinstall);
    assert!(
        conf.excluded.is_some(),
        "the overriding regex is matched against the kernel"
    );
}

#[test]
#[ignore = "tier b: needs root (the trust gate accepts only root-owned files); scripts/test runs it"]
fn bash_never_sources_a_dkms_conf_a_user_could_change_but_plain_ones_are_parsed() {
    use std::os::unix::fs::PermissionsExt;
    let world_writable = |file: &Path| {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666)).unwrap();
    };
    // Plain assignments: read without bash, so nothing runs and nothing is refused.
    let plain = Case::new(SINGLE).gated();
    world_writable(&plain.conf_path());
    assert_eq!(plain.ok().package_name, "foo");
    // Needs bash: refused before bash starts; the marker file proves nothing ran.
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("ran-as-root");
    let shell = Case::new(&format!("{SINGLE}touch {}\n", marker.display())).gated();
    world_writable(&shell.conf_path());
    let err = shell.err(&["not evaluated"]);
    assert!(!marker.exists(), "{err}");
    assert!(
        err.contains("writable by everyone") && err.contains("mode 0666"),
        "{err}"
    );
    // An override file that a user could change is refused the same way.
    let over = Case::new(SINGLE)
        .gated()
        .override_file("foo.conf", "AUTOINSTALL=yes\n");
    let file = over.dir.path().join("etc/foo.conf");
    world_writable(&file);
    let err = over.err(&["not evaluated", "override file", "foo.conf"]);
    assert!(err.contains("writable by everyone"), "{err}");
}

#[test]
fn what_a_dkms_conf_writes_to_relative_paths_is_thrown_away() {
    // Sourcing is running: a stray `>` in a dkms.conf must not litter the source.
    let case = Case::new(&format!("{SINGLE}echo x >stray\nmkdir junk\n"));
    assert_eq!(case.ok().package_name, "foo");
    let left: Vec<_> = std::fs::read_dir(case.dir.path().join("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["dkms.conf"]);
    let scratch: Vec<_> = std::fs::read_dir(case.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dkms-hook-eval.")
        })
        .collect();
    assert!(scratch.is_empty(), "the scratch directory is removed");
}

/// Confs that need bash, each a different way of reading or breaking: evaluated in
/// one batch they give what each gives evaluated alone, errors (naming the file)
/// included.
#[test]
fn a_batch_evaluates_each_conf_as_its_own_bash_would() {
    let zfs_like = format!(
        "{SINGLE}if [ -f $kernel_source_dir/.config ]; then . $kernel_source_dir/.config; fi\n\
         PRE_BUILD=\"configure --with-linux=$(echo \"${{kernel_source_dir}}\")\n  $( [[ -n \\\"${{CROSS_COMPILE}}\\\" ]] && echo --host=\\\"${{CROSS_COMPILE%-}}\\\" )\"\n\
         BUILD_EXCLUSIVE_KERNEL=\"${{CONFIG_X:+NOT}}^6\"\nSTRIP[0]=\"$(echo -n no)\"\nSTRIP[1]=\"${{STRIP[0]}}\"\n"
    );
    let texts = [
        zfs_like,
        // What one conf leaves in its working directory or its shell is not seen by
        // the next, nor are the batch driver's own variables.
        format!(
            "{SINGLE}: >leftover; X=(*); MAKE[0]=\"make ${{X[*]}} $__batch_n $__batch_script\"\n"
        ),
        format!("{SINGLE}X=(*); MAKE[0]=\"make ${{X[*]}} $__batch_n\"; f() {{ :; }}\n"),
        format!("{SINGLE}exit 3\n"),
        "PACKAGE_NAME=foo\nPACKAGE_VERSION=1\nif then fi\n".to_string(),
        format!("{SINGLE}read -r line; CLEAN=\"$line\"; nosuchcommand\n"),
        format!(
            "{SINGLE}for m in a b; do BUILT_MODULE_NAME[${{#BUILT_MODULE_NAME[@]}}]=$m; done\n"
        ),
    ];
    let cases: Vec<Case> = texts.iter().map(|t| Case::new(t)).collect();
    std::fs::create_dir_all(cases[0].dir.path().join("headers")).unwrap();
    std::fs::write(cases[0].dir.path().join("headers/.config"), "CONFIG_X=y\n").unwrap();
    let requests: Vec<_> = cases.iter().map(|c| (c.conf_path(), c.context())).collect();
    let prepared = std::sync::Arc::new(Prepared::default());
    prepared.evaluate(&requests, None);
    for (case, text) in cases.iter().zip(&texts) {
        let alone = evaluate_with_bash(&case.conf_path(), &case.context());
        let batched = prepared
            .get(&case.conf_path(), &case.context())
            .unwrap_or_else(|| panic!("the batch did not evaluate:\n{text}"));
        match (alone, batched) {
            (Ok(alone), Ok(batched)) => {
                assert_eq!(alone.values, batched.values, "values differ for:\n{text}");
                assert_eq!(
                    alone.matches, batched.matches,
                    "matches differ for:\n{text}"
                );
                assert_eq!(alone.stderr, batched.stderr, "stderr differs for:\n{text}");
                assert_eq!(alone.file, batched.file);
            }
            (Err(alone), Err(batched)) => {
                assert_eq!(alone.to_string(), batched.to_string(), "for:\n{text}");
                assert!(
                    batched
                        .to_string()
                        .contains(&case.conf_path().display().to_string()),
                    "the error does not name the file: {batched}"
                );
            }
            (alone, batched) => panic!("alone {alone:?}, batched {batched:?}, for:\n{text}"),
        }
        // evaluate_raw takes the batch's answer, with the same result as without it.
        let mut ctx = case.context();
        ctx.prepared = Some(prepared.clone());
        let sorted = |r: RawConf| {
            r.values
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let through = evaluate_raw(&case.conf_path(), &ctx).map(sorted);
        let without = evaluate_raw(&case.conf_path(), &case.context()).map(sorted);
        assert_eq!(
            format!("{through:?}"),
            format!("{without:?}"),
            "for:\n{text}"
        );
    }
    let produced = &prepared
        .get(&cases[1].conf_path(), &cases[1].context())
        .unwrap()
        .unwrap();
    assert_eq!(
        produced.values["MAKE"][&0],
        b"make leftover ".to_vec(),
        "the driver's variables leaked"
    );
}

#[test]
fn a_batch_leaves_plain_and_untrusted_confs_to_their_own_paths() {
    let plain = Case::new(SINGLE);
    let untrusted = Case::new(&format!("{SINGLE}X=$(echo)\n")).gated();
    // World-writable: refused whoever owns it.
    std::fs::set_permissions(
        untrusted.conf_path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let requests = [
        (plain.conf_path(), plain.context()),
        (untrusted.conf_path(), untrusted.context()),
    ];
    let prepared = Prepared::default();
    prepared.evaluate(&requests, None);
    assert!(prepared.get(&plain.conf_path(), &plain.context()).is_none());
    assert!(prepared
        .get(&untrusted.conf_path(), &untrusted.context())
        .is_none());
    let refused = evaluate_raw(&untrusted.conf_path(), &untrusted.context()).unwrap_err();
    assert!(refused.to_string().contains("not evaluated"), "{refused}");
}

/// The conf cache answers an unchanged evaluation without bash (`$RANDOM` would
/// differ), and anything its key covers changing (content, caller environment, a
/// file in the etc dir) evaluates anew.
#[test]
fn the_conf_cache_answers_only_unchanged_evaluations() {
    let case = Case::new(&format!("{SINGLE}CLEAN=\"$RANDOM$RANDOM$RANDOM\"\n"));
    std::fs::create_dir_all(case.dir.path().join("dkms")).unwrap();
    let root = crate::fs::Root::open(case.dir.path().join("dkms")).unwrap();
    let clean = |case: &Case| {
        let prepared = Prepared::default();
        prepared.evaluate(&[(case.conf_path(), case.context())], Some(&root));
        let raw = prepared
            .get(&case.conf_path(), &case.context())
            .unwrap()
            .unwrap();
        assert_eq!(raw.file, case.conf_path());
        raw.values["CLEAN"][&0].clone()
    };
    let first = clean(&case);
    let entry = cache::entry_file(&case.context());
    assert!(entry.is_file(), "no cache entry at {}", entry.display());
    assert_eq!(
        clean(&case),
        first,
        "an unchanged evaluation ran bash again"
    );
    let case = case.caller_env(&[("CROSS_COMPILE", "x-")]);
    let with_env = clean(&case);
    assert_ne!(
        with_env, first,
        "the caller's environment is not in the key"
    );
    std::fs::write(case.dir.path().join("etc/zfs.conf"), "X=1\n").unwrap();
    assert_ne!(
        clean(&case),
        with_env,
        "the etc dir's files are not in the key"
    );
    std::fs::write(
        case.conf_path(),
        format!("{SINGLE}CLEAN=\"$RANDOM$RANDOM$RANDOM\" \n"),
    )
    .unwrap();
    let changed = clean(&case);
    assert_ne!(changed, with_env, "the conf's content is not in the key");
    // A cache entry another user could have written is not believed.
    std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    assert_ne!(clean(&case), changed, "a world-writable entry was read");
}

#[test]
fn a_dump_written_back_reads_the_same() {
    let case = Case::new(&format!(
        "{SINGLE}MAKE_MATCH[0]='^6'\nBUILD_EXCLUSIVE_ARCH='['\nnosuchcommand\nPOST_BUILD=$'a\\tb'\n"
    ));
    let raw = case.bash();
    let again = parse_dump(&raw.to_dump());
    assert_eq!(again.values, raw.values);
    assert_eq!(again.matches, raw.matches);
    assert_eq!(again.stderr, raw.stderr);
    assert_eq!(again.exited, raw.exited);
    assert!(!raw.matches.is_empty() && !raw.stderr.is_empty(), "{raw:?}");
}
