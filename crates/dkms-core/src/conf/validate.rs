//! Upstream's rules for a dkms.conf, applied to what evaluation read back: required
//! names, module arrays, `.ko` suffixes, install locations, yes/no values, MAKE and
//! PATCH selection, BUILD_EXCLUSIVE_*, deprecations. Pure: no file or process is
//! touched here, so every rule is a fast unit test.

use super::{ConfError, Deprecation, DkmsConf, EvalContext, ModuleSpec, RawConf};
use crate::kernel::KernelConfig;
use crate::name::{ModuleName, ModuleVersion, NameError};
use crate::version::ver_cmp;
use std::cmp::Ordering;
use std::path::Path;

/// Turns the directives read back from bash into a [`DkmsConf`], applying upstream's
/// rules. Pure: everything it needs is in `raw`, `ctx` and the kernel config (`None`
/// when the headers have none, or when no BUILD_EXCLUSIVE_CONFIG needs it; upstream
/// then skips that check).
pub fn validate(
    raw: &RawConf,
    ctx: &EvalContext,
    kernel_config: Option<&KernelConfig>,
) -> Result<DkmsConf, ConfError> {
    let file = raw.file.as_path();
    let text = |name: &str| raw.text(name, 0, file);
    let package_name = text("PACKAGE_NAME")?.unwrap_or_default();
    if package_name.is_empty() {
        return Err(ConfError::directive(
            file,
            "PACKAGE_NAME",
            "is missing",
            "add PACKAGE_NAME=\"<module name>\"",
        ));
    }
    check_before_round_trip(raw, "PACKAGE_NAME")?;
    let package_name = check_identifier(file, "PACKAGE_NAME", &package_name, ModuleName::parse)?;
    let package_version = text("PACKAGE_VERSION")?.unwrap_or_default();
    if package_version.is_empty() {
        return Err(ConfError::directive(
            file,
            "PACKAGE_VERSION",
            "is missing",
            "add PACKAGE_VERSION=\"<version>\"",
        ));
    }
    check_before_round_trip(raw, "PACKAGE_VERSION")?;
    let package_version = check_identifier(
        file,
        "PACKAGE_VERSION",
        &package_version,
        ModuleVersion::parse,
    )?;

    let modules = module_specs(raw, ctx, &package_name)?;

    let autoinstall = yes_no(raw, "AUTOINSTALL")?;
    let build_depends_rebuild = yes_no(raw, "BUILD_DEPENDS_REBUILD")?;
    let no_weak_modules = yes_no(raw, "NO_WEAK_MODULES")?;

    let make_command = select_make(raw)?;
    let patches = select_patches(raw)?;
    for patch in &patches {
        check_relative(
            file,
            "PATCH",
            patch,
            "name a file in the source's patches/ directory",
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
    let (modules, excluded) = apply_build_exclusive(raw, ctx, kernel_config, modules)?;

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

/// The four module arrays must describe the same modules: no holes and no array
/// shorter than the others (count = highest index + 1, as upstream counts).
fn module_specs(
    raw: &RawConf,
    ctx: &EvalContext,
    package_name: &str,
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
    if count == 0 {
        return Ok(Vec::new());
    }
    // A hole in an optional array means "the default" for that module, as upstream
    // reads it; a hole in a required one is an error here rather than a confusing
    // "missing" later.
    for name in ["BUILT_MODULE_NAME", "DEST_MODULE_LOCATION"] {
        let Some(max) = raw.max_index(name) else {
            continue;
        };
        let present: Vec<usize> = raw.elements(name).map(|(i, _)| i).collect();
        if let Some(hole) = (0..count).find(|i| !present.contains(i)) {
            let problem = if hole > max {
                format!("has {} entries but {count} modules are described", max + 1)
            } else {
                format!("has no entry [{hole}] (the array is sparse)")
            };
            return Err(ConfError::directive(
                file,
                name,
                problem,
                format!(
                    "set {name}[0] to {name}[{}] without gaps, one per module",
                    count - 1
                ),
            ));
        }
    }

    let strip_default = strip_value(raw, 0)?.unwrap_or(true);
    let mut specs = Vec::with_capacity(count);
    for index in 0..count {
        let record = |name: &str| raw.text(name, index, file).map(Option::unwrap_or_default);
        let mut built_name = record("BUILT_MODULE_NAME")?;
        if built_name.is_empty() && count == 1 {
            built_name = package_name.to_string();
        }
        if built_name.is_empty() {
            return Err(ConfError::directive(
                file,
                format!("BUILT_MODULE_NAME[{index}]"),
                "is missing",
                "name every module when a package builds more than one",
            ));
        }
        let mut dest_name = record("DEST_MODULE_NAME")?;
        if dest_name.is_empty() {
            dest_name = built_name.clone();
        }
        for (directive, value) in [
            ("BUILT_MODULE_NAME", &built_name),
            ("DEST_MODULE_NAME", &dest_name),
        ] {
            if value.ends_with(".o") || value.ends_with(".ko") {
                return Err(ConfError::directive(
                    file,
                    format!("{directive}[{index}]"),
                    format!("'{value}' ends in '.o' or '.ko'"),
                    "give the module name without its suffix",
                ));
            }
            if value.contains('/')
                || value.chars().any(|c| c.is_whitespace() || c.is_control())
                || value == ".."
            {
                return Err(ConfError::directive(
                    file,
                    format!("{directive}[{index}]"),
                    format!("{value:?} is not a plain module file name"),
                    "use BUILT_MODULE_LOCATION / DEST_MODULE_LOCATION for directories",
                ));
            }
        }
        let mut built_location = record("BUILT_MODULE_LOCATION")?;
        check_relative(
            file,
            &format!("BUILT_MODULE_LOCATION[{index}]"),
            &built_location,
            "give a directory inside the module source",
        )?;
        if !built_location.is_empty() && !built_location.ends_with('/') {
            built_location.push('/');
        }
        let declared_dest = record("DEST_MODULE_LOCATION")?;
        if declared_dest.is_empty() {
            return Err(ConfError::directive(
                file,
                format!("DEST_MODULE_LOCATION[{index}]"),
                "is missing",
                "set it to /updates/dkms (or /kernel/..., /extra/...)",
            ));
        }
        if !["/kernel", "/updates", "/extra"]
            .iter()
            .any(|prefix| declared_dest.starts_with(prefix))
        {
            return Err(ConfError::directive(
                file,
                format!("DEST_MODULE_LOCATION[{index}]"),
                format!("'{declared_dest}' does not begin with /kernel, /updates or /extra"),
                "use /updates/dkms, or a directory under /kernel, /updates or /extra",
            ));
        }
        if declared_dest.split('/').any(|part| part == "..") {
            return Err(ConfError::directive(
                file,
                format!("DEST_MODULE_LOCATION[{index}]"),
                format!("'{declared_dest}' leaves its directory (it contains '..')"),
                "give a directory under /kernel, /updates or /extra without '..'",
            ));
        }
        let dest_location = ctx
            .dest_location_override
            .clone()
            .unwrap_or_else(|| declared_dest.clone());
        let strip = strip_value(raw, index)?.unwrap_or(strip_default);
        specs.push(ModuleSpec {
            built_name,
            built_location,
            dest_name,
            dest_location,
            declared_dest_location: declared_dest,
            strip,
            excluded: None,
        });
    }

    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            if a.built_location == b.built_location && a.built_name == b.built_name {
                return Err(ConfError::directive(
                    file,
                    format!("BUILT_MODULE_NAME[{i}]"),
                    format!("'{}{}' is listed twice", a.built_location, a.built_name),
                    "list each built module once",
                ));
            }
            if a.dest_location == b.dest_location && a.dest_name == b.dest_name {
                return Err(ConfError::directive(
                    file,
                    format!("DEST_MODULE_NAME[{i}]"),
                    format!(
                        "'{}/{}' would be installed twice",
                        a.dest_location, a.dest_name
                    ),
                    "give each module its own DEST_MODULE_NAME",
                ));
            }
        }
    }
    Ok(specs)
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
        Err(ConfError::directive(
            file,
            name,
            format!("unsupported value '{value}'"),
            format!("write {name}=\"yes\" or {name}=\"no\""),
        ))
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
