//! `dkms-hook plan` as text: one numbered line per target to build (with what it
//! waits for), one line per target left out and why.

use dkms_core::plan::{Left, Plan};
use std::fmt::Write as _;

/// The plan, one line per decision.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let mut number = 0;
    for d in &plan.decisions {
        let t = &d.target;
        let what = format!("{}/{} for {} ({})", t.module, t.version, t.kernel, t.arch);
        let _ = match &d.left {
            None => {
                number += 1;
                let after: Vec<String> = d
                    .after
                    .iter()
                    .map(|a| format!("{}/{}", a.module, a.version))
                    .collect();
                let after = if after.is_empty() {
                    String::new()
                } else {
                    format!(", after {}", after.join(", "))
                };
                writeln!(out, "{number:>3}. build  {what}{after}")
            }
            Some(Left::AlreadyInstalled) => writeln!(out, "     ok     {what}: installed"),
            Some(Left::Excluded(r)) => writeln!(out, "     skip   {what}: excluded: {r}"),
            Some(Left::NoHeaders) => {
                writeln!(out, "     skip   {what}: no headers for {}", t.kernel)
            }
            Some(Left::Deferred(deps)) => writeln!(
                out,
                "     defer  {what}: BUILD_DEPENDS not registered with DKMS: {}",
                deps.join(", ")
            ),
            Some(Left::Failed(r)) => writeln!(out, "     fail   {what}: {r}"),
        };
    }
    out
}
