//! Upstream's rules for a dkms.conf, applied to what evaluation read back: required
//! names, module arrays, `.ko` suffixes, install locations, yes/no values, MAKE and
//! PATCH selection, BUILD_EXCLUSIVE_*, deprecations. Pure: no file or process is
//! touched here, so every rule is a fast unit test.

use super::{
    ConfError, Deprecation, DkmsConf, EvalContext, ModuleSpec, Problem, RawConf, UpstreamRule,
};
use crate::kernel::KernelConfig;
use crate::name::{ModuleName, ModuleVersion, NameError};
use crate::version::ver_cmp;
use std::cmp::Ordering;
use std::path::Path;

/// Turns the directives read back from bash into a [`DkmsConf`], applying upstream's
/// rules. Pure: everything it needs is in `raw`, `ctx` and the kernel config (`None`
/// when the headers have none, or when no BUILD_EXCLUSIVE_CONFIG needs it; upstream
/// then skips that check). A broken rule does not stop the checks: the error lists
/// every problem, in upstream's order.
pub fn validate(
    raw: &RawConf,
    ctx: &EvalContext,
    kernel_config: Option<&KernelConfig>,
) -> Result<DkmsConf, ConfError> {
    let file = raw.file.as_path();
    let text = |name: &str| raw.text(name, 0, file);
    let mut problems = Vec::new();
    let package_name = required_name(raw, "PACKAGE_NAME", &mut problems)?;
    let package_version = required_name(raw, "PACKAGE_VERSION", &mut problems)?;

    let modules = module_specs(raw, ctx, &package_name, &mut problems)?;

    let mut yes = |name: &str| -> Result<bool, ConfError> {
        Ok(collect(yes_no(raw, name), &mut problems)?.unwrap_or(false))
    };
    let autoinstall = yes("AUTOINSTALL")?;
    let build_depends_rebuild = yes("BUILD_DEPENDS_REBUILD")?;
    let no_weak_modules = yes("NO_WEAK_MODULES")?;
    // Upstream checks duplicates only once everything else passed (read_conf_strict).
    if problems.is_empty() {
        duplicates(&modules, &mut problems);
    }

    let make_command = collect(select_make(raw), &mut problems)?.flatten();
    let patches = collect(select_patches(raw), &mut problems)?.unwrap_or_default();
    for patch in &patches {
        collect(
            check_relative(
                file,
                "PATCH",
                patch,
                "name a file in the source's patches/ directory",
            ),
            &mut problems,
        )?;
    }

    let mut build_depends = Vec::new();
    for (_, dep) in raw.elements("BUILD_DEPENDS") {
        let dep = raw.to_text("BUILD_DEPENDS", dep, file)?;
        for name in dep.split_whitespace() {
            if !build_depends.iter().any(|d: &String| d == name) {
                build_depends.push(name.to_string());
            }
        }
    }

    let deprecations = deprecations(raw);
    let exclusive = collect(
        apply_build_exclusive(raw, ctx, kernel_config, modules),
        &mut problems,
    )?;
    let Some((modules, excluded)) = exclusive.filter(|_| problems.is_empty()) else {
        return Err(ConfError::Invalid {
            file: file.to_path_buf(),
            problems,
        });
    };

    let package_name = check_identifier(file, "PACKAGE_NAME", &package_name, ModuleName::parse)?;
    let package_version = check_identifier(
        file,
        "PACKAGE_VERSION",
        &package_version,
        ModuleVersion::parse,
    )?;
    Ok(DkmsConf {
        file: file.to_path_buf(),
        package_name,
        package_version,
        modules,
        make_command,
        patches,
        pre_build: non_empty(text("PRE_BUILD")?),
        post_build: non_empty(text("POST_BUILD")?),
        post_add: non_empty(text("POST_ADD")?),
        pre_install: non_empty(text("PRE_INSTALL")?),
        post_install: non_empty(text("POST_INSTALL")?),
        post_remove: non_empty(text("POST_REMOVE")?),
        autoinstall,
        build_depends,
        build_depends_rebuild,
        no_weak_modules,
        excluded,
        deprecations,
        warnings: raw
            .stderr
            .iter()
            .map(|(f, t)| format!("{}: {}", f.display(), t.trim_end()))
            .collect(),
    })
}

/// Moves the problems of a rule's failure into `problems` (`None` then) and passes
/// every other error (unreadable, not UTF-8 where text is needed) on.
fn collect<T>(
    result: Result<T, ConfError>,
    problems: &mut Vec<Problem>,
) -> Result<Option<T>, ConfError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(ConfError::Invalid { problems: more, .. }) => {
            problems.extend(more);
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// PACKAGE_NAME or PACKAGE_VERSION: present and a usable name (empty when it is not;
/// the problem is in `problems`).
fn required_name(
    raw: &RawConf,
    directive: &str,
    problems: &mut Vec<Problem>,
) -> Result<String, ConfError> {
    let value = raw.text(directive, 0, &raw.file)?.unwrap_or_default();
    if value.is_empty() {
        let (fix, rule) = if directive == "PACKAGE_NAME" {
            (
                "add PACKAGE_NAME=\"<module name>\"",
                UpstreamRule::NoPackageName,
            )
        } else {
            (
                "add PACKAGE_VERSION=\"<version>\"",
                UpstreamRule::NoPackageVersion,
            )
        };
        problems.push(Problem::new(directive, "is missing", fix).upstream(rule));
        return Ok(value);
    }
    let before = problems.len();
    collect(check_before_round_trip(raw, directive), problems)?;
    if problems.len() == before {
        // Module names and versions share name.rs's rules; the typed value is taken
        // once every rule passed (below, in validate).
        collect(
            check_identifier(&raw.file, directive, &value, ModuleVersion::parse).map(|_| ()),
            problems,
        )?;
    }
    Ok(value)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Names and versions become path components and status fields: no separators,
/// whitespace or control characters. Parsed here, where they enter from the file.
fn check_identifier<T>(
    file: &Path,
    directive: &str,
    value: &str,
    parse: fn(&str) -> Result<T, NameError>,
) -> Result<T, ConfError> {
    // `<name>-<version>` names a directory: each must leave room in NAME_MAX (255).
    const MAX: usize = 127;
    if value.len() > MAX {
        let preview: String = value.chars().take(20).collect();
        return Err(ConfError::directive(
            file,
            directive,
            format!(
                "'{preview}...' is {} bytes long, more than {MAX}",
                value.len()
            ),
            "use a short name: <name>-<version> must fit in one directory name",
        ));
    }
    // name.rs decides what a usable name is (module names and versions share its
    // rules); an empty value is the required-directive check's to report.
    let message = match parse(value) {
        Ok(name) => return Ok(name),
        Err(e) if e.problem == crate::name::A_PATH => {
            format!("'{value}' is not a usable name (it would be a path)")
        }
        Err(e) if e.problem == crate::name::WHITESPACE => {
            format!("{value:?} contains whitespace or control characters")
        }
        Err(e) => e.to_string(),
    };
    Err(ConfError::directive(
        file,
        directive,
        message,
        "use letters, digits, '.', '_', '+' or '-' only",
    ))
}

/// A control character (a newline, a tab) in a name as the dkms.conf wrote it is
/// refused naming that value, although dkms's round trip would have made it a space
/// (already refused) or dropped it: the user should see what is in their file. Plain
/// spaces the round trip trims are not refused, as dkms accepts them.
fn check_before_round_trip(raw: &RawConf, directive: &str) -> Result<(), ConfError> {
    let Some(bytes) = raw.before_round_trip.get(directive) else {
        return Ok(());
    };
    let value = String::from_utf8_lossy(bytes);
    if !value.chars().any(char::is_control) {
        return Ok(());
    }
    Err(ConfError::directive(
        &raw.file,
        directive,
        format!("{value:?} contains whitespace or control characters"),
        "use letters, digits, '.', '_', '+' or '-' only",
    ))
}

/// Relative paths that must stay inside their tree: no `..`, not absolute.
fn check_relative(file: &Path, directive: &str, value: &str, fix: &str) -> Result<(), ConfError> {
    if value.starts_with('/') || value.split('/').any(|part| part == "..") {
        return Err(ConfError::directive(
            file,
            directive,
            format!("'{value}' leaves its directory (absolute path or '..')"),
            fix,
        ));
    }
    Ok(())
}

/// The modules the four arrays describe (count = highest index + 1, as upstream
/// counts; a hole in an optional array means "the default" for that module). Each
/// record is checked in full, upstream's rules in upstream's order; a record with a
/// problem adds it to `problems` and no module.
fn module_specs(
    raw: &RawConf,
    ctx: &EvalContext,
    package_name: &str,
    problems: &mut Vec<Problem>,
) -> Result<Vec<ModuleSpec>, ConfError> {
    let file = raw.file.as_path();
    const ARRAYS: [&str; 4] = [
        "BUILT_MODULE_NAME",
        "BUILT_MODULE_LOCATION",
        "DEST_MODULE_NAME",
        "DEST_MODULE_LOCATION",
    ];
    let count = ARRAYS
        .iter()
        .filter_map(|name| raw.max_index(name))
        .max()
        .map_or(0, |max| max + 1);
    // Zero modules is valid, as upstream has it (it warns; a package may ship only
    // firmware or userspace parts through its scripts): nothing is built or installed.
    let strip_default = if count == 0 {
        true
    } else {
        collect(strip_value(raw, 0), problems)?
            .flatten()
            .unwrap_or(true)
    };
    let mut specs = Vec::with_capacity(count);
    for index in 0..count {
        let before = problems.len();
        let record = |name: &str| raw.text(name, index, file).map(Option::unwrap_or_default);
        let mut built_name = record("BUILT_MODULE_NAME")?;
        if built_name.is_empty() && count == 1 {
            built_name = package_name.to_string();
        }
        if built_name.is_empty() {
            problems.push(
                Problem::new(
                    format!("BUILT_MODULE_NAME[{index}]"),
                    missing(raw, "BUILT_MODULE_NAME"),
                    "name every module when a package builds more than one",
                )
                .upstream(UpstreamRule::NoBuiltModuleName { record: index }),
            );
        }
        let mut dest_name = record("DEST_MODULE_NAME")?;
        if dest_name.is_empty() {
            dest_name = built_name.clone();
        }
        for (directive, value, rule) in [
            (
                "BUILT_MODULE_NAME",
                &built_name,
                UpstreamRule::BuiltModuleNameSuffix { record: index },
            ),
            (
                "DEST_MODULE_NAME",
                &dest_name,
                UpstreamRule::DestModuleNameSuffix { record: index },
            ),
        ] {
            if value.ends_with(".o") || value.ends_with(".ko") {
                problems.push(
                    Problem::new(
                        format!("{directive}[{index}]"),
                        format!("'{value}' ends in '.o' or '.ko'"),
                        "give the module name without its suffix",
                    )
                    .upstream(rule),
                );
            } else if value.contains('/')
                || value.chars().any(|c| c.is_whitespace() || c.is_control())
                || value == ".."
            {
                problems.push(Problem::new(
                    format!("{directive}[{index}]"),
                    format!("{value:?} is not a plain module file name"),
                    "use BUILT_MODULE_LOCATION / DEST_MODULE_LOCATION for directories",
                ));
            }
        }
        let mut built_location = record("BUILT_MODULE_LOCATION")?;
        collect(
            check_relative(
                file,
                &format!("BUILT_MODULE_LOCATION[{index}]"),
                &built_location,
                "give a directory inside the module source",
            ),
            problems,
        )?;
        if !built_location.is_empty() && !built_location.ends_with('/') {
            built_location.push('/');
        }
        let declared_dest = record("DEST_MODULE_LOCATION")?;
        let directive = format!("DEST_MODULE_LOCATION[{index}]");
        if declared_dest.is_empty() {
            problems.push(
                Problem::new(
                    &directive,
                    missing(raw, "DEST_MODULE_LOCATION"),
                    "set it to /updates/dkms (or /kernel/..., /extra/...)",
                )
                .upstream(UpstreamRule::NoDestModuleLocation { record: index }),
            );
        } else if !["/kernel", "/updates", "/extra"]
            .iter()
            .any(|prefix| declared_dest.starts_with(prefix))
        {
            problems.push(
                Problem::new(
                    &directive,
                    format!("'{declared_dest}' does not begin with /kernel, /updates or /extra"),
                    "use /updates/dkms, or a directory under /kernel, /updates or /extra",
                )
                .upstream(UpstreamRule::DestModuleLocationPrefix { record: index }),
            );
        } else if declared_dest.split('/').any(|part| part == "..") {
            problems.push(Problem::new(
                &directive,
                format!("'{declared_dest}' leaves its directory (it contains '..')"),
                "give a directory under /kernel, /updates or /extra without '..'",
            ));
        }
        let strip = match index {
            0 => None,
            _ => collect(strip_value(raw, index), problems)?.flatten(),
        };
        if problems.len() > before {
            continue;
        }
        let dest_location = ctx
            .dest_location_override
            .clone()
            .unwrap_or_else(|| declared_dest.clone());
        specs.push(ModuleSpec {
            built_name,
            built_location,
            dest_name,
            dest_location,
            declared_dest_location: declared_dest,
            strip: strip.unwrap_or(strip_default),
            excluded: None,
        });
    }
    Ok(specs)
}

/// "is missing", and why when the array has entries for other modules.
fn missing(raw: &RawConf, array: &str) -> &'static str {
    match raw.max_index(array) {
        Some(_) => "is missing (the array has no entry for this module)",
        None => "is missing",
    }
}

/// Upstream's duplicate rules: a built module (location and name) listed twice, a
/// DEST_MODULE_NAME used twice (whatever the locations: modprobe loads by name).
fn duplicates(specs: &[ModuleSpec], problems: &mut Vec<Problem>) {
    for (i, a) in specs.iter().enumerate() {
        let earlier = &specs[..i];
        if earlier
            .iter()
            .any(|b| a.built_location == b.built_location && a.built_name == b.built_name)
        {
            let module = format!("{}{}", a.built_location, a.built_name);
            problems.push(
                Problem::new(
                    format!("BUILT_MODULE_NAME[{i}]"),
                    format!("'{module}' is listed twice"),
                    "list each built module once",
                )
                .upstream(UpstreamRule::DuplicateBuiltModule { module, record: i }),
            );
        }
    }
    for (i, a) in specs.iter().enumerate() {
        if specs[..i].iter().any(|b| a.dest_name == b.dest_name) {
            problems.push(
                Problem::new(
                    format!("DEST_MODULE_NAME[{i}]"),
                    format!("'{}' would be installed twice", a.dest_name),
                    "give each module its own DEST_MODULE_NAME",
                )
                .upstream(UpstreamRule::DuplicateDestModule {
                    module: a.dest_name.clone(),
                    record: i,
                }),
            );
        }
    }
}

/// STRIP[i]: yes/no by first letter as upstream reads it; empty means "as STRIP[0]".
fn strip_value(raw: &RawConf, index: usize) -> Result<Option<bool>, ConfError> {
    let file = raw.file.as_path();
    let Some(value) = raw.text("STRIP", index, file)? else {
        return Ok(None);
    };
    match value.chars().next() {
        None => Ok(None),
        Some('y' | 'Y') => Ok(Some(true)),
        Some('n' | 'N') => Ok(Some(false)),
        Some(_) => Err(ConfError::directive(
            file,
            format!("STRIP[{index}]"),
            format!("'{value}' is neither yes nor no"),
            "write STRIP[{index}]=\"yes\" or \"no\"",
        )),
    }
}

fn yes_no(raw: &RawConf, name: &str) -> Result<bool, ConfError> {
    let file = raw.file.as_path();
    let value = raw.text(name, 0, file)?.unwrap_or_default();
    if value.is_empty() {
        Ok(false)
    } else if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(ConfError::Invalid {
            file: file.to_path_buf(),
            problems: vec![Problem::new(
                name,
                format!("unsupported value '{value}'"),
                format!("write {name}=\"yes\" or {name}=\"no\""),
            )
            .upstream(UpstreamRule::UnsupportedValue {
                name: name.to_string(),
                value,
            })],
        })
    }
}

fn regex_error(raw: &RawConf, name: &str, index: usize) -> ConfError {
    let pattern = raw
        .text(name, index, &raw.file)
        .ok()
        .flatten()
        .unwrap_or_default();
    ConfError::directive(
        &raw.file,
        format!("{name}[{index}]"),
        format!("'{pattern}' is not a valid extended regular expression"),
        "fix the pattern (it is matched with bash's =~)",
    )
}

/// Whether element `index` of a *_MATCH array matched; errors on an invalid regex.
fn matched(raw: &RawConf, name: &str, index: usize) -> Result<Option<bool>, ConfError> {
    match raw.matches.get(&(name.to_string(), index)) {
        None => Ok(None),
        Some(0) => Ok(Some(true)),
        Some(1) => Ok(Some(false)),
        Some(_) => Err(regex_error(raw, name, index)),
    }
}

/// MAKE[0] unless MAKE_MATCH[0] is set; then the last MAKE[i] whose MAKE_MATCH[i]
/// matches the kernel, as upstream chooses.
fn select_make(raw: &RawConf) -> Result<Option<String>, ConfError> {
    let file = raw.file.as_path();
    let mut command = None;
    if raw
        .text("MAKE_MATCH", 0, file)?
        .unwrap_or_default()
        .is_empty()
    {
        command = non_empty(raw.text("MAKE", 0, file)?);
    }
    let count = raw.max_index("MAKE").map_or(0, |m| m + 1);
    for index in 0..count {
        let make = raw.text("MAKE", index, file)?.unwrap_or_default();
        if make.is_empty() {
            continue;
        }
        if matched(raw, "MAKE_MATCH", index)? == Some(true) {
            command = Some(make);
        }
    }
    Ok(command)
}

/// PATCH[i] applies when PATCH_MATCH[i] is empty or matches the kernel.
fn select_patches(raw: &RawConf) -> Result<Vec<String>, ConfError> {
    let file = raw.file.as_path();
    let count = raw.max_index("PATCH").map_or(0, |m| m + 1);
    let mut patches = Vec::new();
    for index in 0..count {
        let patch = raw.text("PATCH", index, file)?.unwrap_or_default();
        if patch.is_empty() {
            continue;
        }
        if matched(raw, "PATCH_MATCH", index)? != Some(false) {
            patches.push(patch);
        }
    }
    Ok(patches)
}

fn deprecations(raw: &RawConf) -> Vec<Deprecation> {
    let mut found = Vec::new();
    let set = |name: &str| raw.elements(name).next().is_some();
    let clean = raw
        .text("CLEAN", 0, &raw.file)
        .ok()
        .flatten()
        .unwrap_or_default();
    if set("CLEAN") && !matches!(clean.as_str(), "true" | "/bin/true" | "/usr/bin/true") {
        found.push(Deprecation {
            directive: "CLEAN".into(),
            advice: "it is ignored; make's clean target is not run".into(),
        });
    }
    for name in [
        "REMAKE_INITRD",
        "MODULES_CONF",
        "MODULES_CONF_OBSOLETES",
        "MODULES_CONF_ALIAS_TYPE",
        "MODULES_CONF_OBSOLETE_ONLY",
    ] {
        if set(name) {
            found.push(Deprecation {
                directive: name.into(),
                advice: "it is ignored; remove it".into(),
            });
        }
    }
    if set("OBSOLETE_BY") {
        found.push(Deprecation {
            directive: "OBSOLETE_BY".into(),
            advice: "use BUILD_EXCLUSIVE_KERNEL_MAX instead".into(),
        });
    }
    found
}

/// Decides BUILD_EXCLUSIVE_* for the evaluated kernel: global directives exclude
/// every module, `[i]` forms only module i. When directives exist and no module is
/// left, the whole package is excluded.
fn apply_build_exclusive(
    raw: &RawConf,
    ctx: &EvalContext,
    kernel_config: Option<&KernelConfig>,
    mut modules: Vec<ModuleSpec>,
) -> Result<(Vec<ModuleSpec>, Option<String>), ConfError> {
    let file = raw.file.as_path();
    let obsolete_by = raw.text("OBSOLETE_BY", 0, file)?.unwrap_or_default();
    let per_module_max = (0..modules.len()).any(|i| {
        i > 0
            && !raw
                .text("BUILD_EXCLUSIVE_KERNEL_MAX", i, file)
                .ok()
                .flatten()
                .unwrap_or_default()
                .is_empty()
    });
    let global_max = raw
        .text("BUILD_EXCLUSIVE_KERNEL_MAX", 0, file)?
        .unwrap_or_default();
    let implied_max = (!obsolete_by.is_empty() && global_max.is_empty() && !per_module_max)
        .then_some(obsolete_by);

    let mut any_directive = implied_max.is_some();
    for (index, module) in modules.iter_mut().enumerate() {
        // Index 0 is both the global (scalar) form and module 0's own entry.
        let mut reason = None;
        for idx in if index == 0 { vec![0] } else { vec![0, index] } {
            let value = |name: &str| raw.text(name, idx, file).map(Option::unwrap_or_default);
            let kernel = value("BUILD_EXCLUSIVE_KERNEL")?;
            let min = value("BUILD_EXCLUSIVE_KERNEL_MIN")?;
            let max = match (idx, &implied_max) {
                (0, Some(obsolete)) => obsolete.clone(),
                _ => value("BUILD_EXCLUSIVE_KERNEL_MAX")?,
            };
            let arch = value("BUILD_EXCLUSIVE_ARCH")?;
            let configs = value("BUILD_EXCLUSIVE_CONFIG")?;
            if [&kernel, &min, &max, &arch, &configs]
                .iter()
                .any(|v| !v.is_empty())
            {
                any_directive = true;
            }
            if reason.is_some() {
                continue;
            }
            let suffix = if idx == 0 {
                String::new()
            } else {
                format!("[{idx}]")
            };
            if !kernel.is_empty() && matched(raw, "BUILD_EXCLUSIVE_KERNEL", idx)? == Some(false) {
                reason = Some(format!(
                    "kernel {} does not match BUILD_EXCLUSIVE_KERNEL{suffix}='{kernel}'",
                    ctx.kernelver
                ));
            } else if !min.is_empty() && ver_cmp(&ctx.kernelver, &min) == Ordering::Less {
                reason = Some(format!(
                    "kernel {} is older than BUILD_EXCLUSIVE_KERNEL_MIN{suffix}='{min}'",
                    ctx.kernelver
                ));
            } else if !max.is_empty() && ver_cmp(&ctx.kernelver, &max) == Ordering::Greater {
                reason = Some(format!(
                    "kernel {} is newer than BUILD_EXCLUSIVE_KERNEL_MAX{suffix}='{max}'",
                    ctx.kernelver
                ));
            } else if !arch.is_empty() && matched(raw, "BUILD_EXCLUSIVE_ARCH", idx)? == Some(false)
            {
                reason = Some(format!(
                    "architecture {} does not match BUILD_EXCLUSIVE_ARCH{suffix}='{arch}'",
                    ctx.arch
                ));
            } else if let Some(config_reason) = (!configs.is_empty())
                .then_some(kernel_config)
                .flatten()
                .and_then(|c| c.unmet(&configs))
            {
                reason = Some(format!("{config_reason} (BUILD_EXCLUSIVE_CONFIG{suffix})"));
            }
        }
        module.excluded = reason;
    }
    let excluded = if any_directive && modules.iter().all(|m| m.excluded.is_some()) {
        modules.first().and_then(|m| m.excluded.clone())
    } else {
        None
    };
    Ok((modules, excluded))
}
