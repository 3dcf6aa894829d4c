//! BUILD_DEPENDS_REBUILD: when a dependency gets a new version on a kernel, a
//! dependent that declared it is rebuilt for that kernel in the same run, after it.

use crate::support::{Sandbox, K54};

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_new_dependency_version_rebuilds_dependents_that_ask_for_it_after_it() {
    let sb = Sandbox::new();
    sb.copy_fixture("zzz-base", "1.0");
    let dependent = sb.copy_fixture("aaa-dependent", "1.0");
    // Link against whichever zzz-base version is installed, through its install link.
    let conf = std::fs::read_to_string(dependent.join("dkms.conf")).unwrap();
    let conf = conf.replace(
        "zzz-base/1.0/${kernelver}/${arch}",
        "zzz-base/kernel-${kernelver}-${arch}",
    ) + "BUILD_DEPENDS_REBUILD=\"yes\"\n";
    std::fs::write(dependent.join("dkms.conf"), conf).unwrap();
    for mv in ["zzz-base/1.0", "aaa-dependent/1.0"] {
        assert_eq!(sb.run_ours(&["add", mv]).code, 0);
    }
    let first = sb.run_ours(&["autoinstall", "-k", K54]);
    assert_eq!(first.code, 0, "{first}");

    // zzz-base 2.0 arrives.
    let base2 = sb.source_tree().join("zzz-base-2.0");
    std::fs::create_dir_all(&base2).unwrap();
    for entry in std::fs::read_dir(sb.source_tree().join("zzz-base-1.0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), base2.join(entry.file_name())).unwrap();
    }
    let conf = std::fs::read_to_string(base2.join("dkms.conf"))
        .unwrap()
        .replace("PACKAGE_VERSION=\"1.0\"", "PACKAGE_VERSION=\"2.0\"");
    std::fs::write(base2.join("dkms.conf"), conf).unwrap();
    assert_eq!(sb.run_ours(&["add", "zzz-base/2.0"]).code, 0);

    let plan = sb.run_ours(&["plan", "-k", K54]);
    assert!(
        plan.stdout.contains(&format!(
            "build  aaa-dependent/1.0 for {K54} (x86_64), after zzz-base/2.0"
        )),
        "{plan}"
    );
    let second = sb.run_ours(&["autoinstall", "-k", K54]);
    assert_eq!(second.code, 0, "{second}");
    let base_done = second
        .stdout
        .find(&format!("zzz-base/2.0 for {K54}: installed"))
        .expect("zzz-base 2.0 installed");
    let dependent_start = second
        .stdout
        .find(&format!("building aaa-dependent/1.0 for {K54}"))
        .expect("aaa-dependent rebuilt");
    assert!(base_done < dependent_start, "{second}");
    assert_eq!(
        sb.run_ours(&["status", "--compat", "-m", "aaa-dependent"])
            .stdout,
        format!("aaa-dependent/1.0, {K54}, x86_64: installed\n")
    );
}
