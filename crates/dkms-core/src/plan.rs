//! The plan: which (module, version, kernel, arch) targets to build and install, in
//! which order, and why the others are left out. The one place ordering is decided.
//!
//! Edges come from BUILD_DEPENDS on the same kernel: openzfs on K waits for spl on K,
//! not for spl on other kernels. A cycle fails its members only; a dependency DKMS has
//! never heard of defers the dependent with a warning (upstream 3.4.1); a dependency
//! that is registered but not set to AUTOINSTALL fails the dependent.

use crate::conf::DkmsConf;
use crate::host::Host;
use crate::name::{Arch, KernelRelease, ModuleName, ModuleVersion};
use crate::tree::{self, KernelArch, SourceState, Target};
use crate::version::ver_cmp;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Why a candidate is not in the build order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Left {
    /// Installed already: nothing to do.
    AlreadyInstalled,
    /// BUILD_EXCLUSIVE_* rules this kernel out.
    Excluded(String),
    /// The kernel has no headers.
    NoHeaders,
    /// A BUILD_DEPENDS module is not registered with DKMS: maybe a package not yet
    /// configured provides it; retried on the next run.
    Deferred(Vec<String>),
    /// A failure known before building: bad dkms.conf, a cycle, a dependency that
    /// will not be built.
    Failed(String),
}

/// One target with the reason it is in the plan or out of it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub target: Target,
    /// `None`: build and install, at this position of [`Plan::decisions`].
    pub left: Option<Left>,
    /// Targets of the same kernel this one waits for.
    pub after: Vec<Target>,
    /// Build again even though it is built or installed (its source was reinstalled).
    pub rebuild: bool,
}

/// The ordered decisions for a set of kernels.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// The targets to build, in an order where dependencies come first.
    pub fn jobs(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.left.is_none())
    }
}

/// The newest added version of every module, by dkms's `VER()` order (ties keep the
/// first in listing order, as upstream does).
pub fn newest_versions(host: &Host) -> BTreeMap<ModuleName, ModuleVersion> {
    let mut newest: BTreeMap<ModuleName, ModuleVersion> = BTreeMap::new();
    for mv in tree::module_versions(&host.paths, None, None) {
        if mv.source != SourceState::Added {
            continue;
        }
        match newest.get(&mv.module) {
            Some(current) if ver_cmp(&mv.version, current) != std::cmp::Ordering::Greater => {}
            _ => {
                newest.insert(mv.module, mv.version);
            }
        }
    }
    newest
}

/// What `autoinstall` does for `kernels`: the newest version of every AUTOINSTALL
/// module not installed yet, dependencies first.
pub fn autoinstall(host: &Host, kernels: &[KernelArch]) -> Plan {
    let newest = newest_versions(host);
    plan(host, kernels, |_, module, version| {
        (newest.get(module) == Some(version)).then_some(Selection::IfAutoinstall)
    })
}

/// Why a module version is a candidate on a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Only if its dkms.conf says AUTOINSTALL=yes (a kernel changed).
    IfAutoinstall,
    /// Whatever AUTOINSTALL says, and rebuilt even when installed (its source changed).
    Rebuild,
}

/// The plan for `kernels`, with `select(kernel, module, version)` choosing among the
/// added module versions.
pub fn plan<F>(host: &Host, kernels: &[KernelArch], select: F) -> Plan
where
    F: Fn(&KernelRelease, &ModuleName, &ModuleVersion) -> Option<Selection>,
{
    let registered = newest_versions(host);
    let versions = tree::module_versions(&host.paths, None, None);
    let mut plan = Plan::default();
    for (kernel, arch) in kernels {
        // One version per module and kernel: the newest one selected.
        let mut chosen: BTreeMap<&ModuleName, (&ModuleVersion, Selection)> = BTreeMap::new();
        for mv in versions.iter().filter(|mv| mv.source == SourceState::Added) {
            let Some(selection) = select(kernel, &mv.module, &mv.version) else {
                continue;
            };
            match chosen.get(&mv.module) {
                Some((v, _)) if ver_cmp(&mv.version, v) != std::cmp::Ordering::Greater => {}
                _ => {
                    chosen.insert(&mv.module, (&mv.version, selection));
                }
            }
        }
        let mut candidates = Vec::new();
        for (module, (version, selection)) in chosen {
            let target = Target::new(module, version, kernel, arch);
            match host.read_conf(module, version, kernel, arch) {
                Ok(conf) if conf.autoinstall || selection == Selection::Rebuild => {
                    candidates.push((target, Ok(conf), selection == Selection::Rebuild))
                }
                Ok(_) => {}
                Err(e) => candidates.push((target, Err(e.to_string()), false)),
            }
        }
        add_rebuild_dependents(host, kernel, arch, &versions, &mut candidates);
        plan.decisions
            .extend(order_kernel(host, candidates, &registered));
    }
    plan
}

/// BUILD_DEPENDS_REBUILD: a module installed on this kernel that declared it is
/// rebuilt when one of its BUILD_DEPENDS gets a new build here (a new version, or a
/// rebuilt source), transitively; the plan's edges put it after the dependency.
fn add_rebuild_dependents(
    host: &Host,
    kernel: &KernelRelease,
    arch: &Arch,
    versions: &[tree::ModuleVersion],
    candidates: &mut Vec<(Target, Result<DkmsConf, String>, bool)>,
) {
    loop {
        let building: Vec<String> = candidates
            .iter()
            .filter(|(t, conf, rebuild)| conf.is_ok() && (*rebuild || !t.is_installed(&host.paths)))
            .map(|(t, _, _)| t.module.to_string())
            .collect();
        let mut added = false;
        // Installed candidates (autoinstall's own) that asked for it become rebuilds.
        for (target, conf, rebuild) in candidates.iter_mut() {
            let Ok(conf) = conf else { continue };
            if !*rebuild
                && conf.build_depends_rebuild
                && target.is_installed(&host.paths)
                && conf.build_depends.iter().any(|d| building.contains(d))
            {
                *rebuild = true;
                added = true;
            }
        }
        for mv in versions.iter().filter(|mv| mv.source == SourceState::Added) {
            if candidates.iter().any(|(t, _, _)| t.module == mv.module) {
                continue;
            }
            if !tree::is_installed(&host.paths, &mv.module, &mv.version, kernel, arch) {
                continue;
            }
            let Ok(conf) = host.read_conf(&mv.module, &mv.version, kernel, arch) else {
                continue;
            };
            if conf.build_depends_rebuild && conf.build_depends.iter().any(|d| building.contains(d))
            {
                candidates.push((
                    Target::new(&mv.module, &mv.version, kernel, arch),
                    Ok(conf),
                    true,
                ));
                added = true;
            }
        }
        if !added {
            break;
        }
    }
}

/// Orders one kernel's candidates by BUILD_DEPENDS and decides what is left out.
fn order_kernel(
    host: &Host,
    candidates: Vec<(Target, Result<DkmsConf, String>, bool)>,
    registered: &BTreeMap<ModuleName, ModuleVersion>,
) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = Vec::new();
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let mut node_of: HashMap<String, NodeIndex> = HashMap::new();
    let mut confs = Vec::new();
    let headers = |kernel: &str| {
        host.paths
            .kernel_source_dir(kernel)
            .join("include")
            .is_dir()
    };

    for (target, conf, rebuild) in candidates {
        let index = decisions.len();
        let left = match &conf {
            Err(e) => Some(Left::Failed(e.clone())),
            Ok(_) if !rebuild && target.is_installed(&host.paths) => Some(Left::AlreadyInstalled),
            Ok(c) if c.excluded.is_some() => {
                Some(Left::Excluded(c.excluded.clone().unwrap_or_default()))
            }
            Ok(_) if !headers(&target.kernel) => Some(Left::NoHeaders),
            // Would be refused when building: say so now.
            Ok(_) => host
                .check_added_source(&target.module, &target.version)
                .err()
                .map(|e| Left::Failed(e.to_string())),
        };
        if left.is_none() {
            node_of.insert(target.module.to_string(), graph.add_node(index));
        }
        decisions.push(Decision {
            target,
            left,
            after: Vec::new(),
            rebuild,
        });
        confs.push(conf.ok());
    }

    // Edges, and what a dependency outside the build set means.
    for index in 0..decisions.len() {
        let Some(&node) = node_of.get(decisions[index].target.module.as_str()) else {
            continue;
        };
        let Some(conf) = &confs[index] else { continue };
        let (kernel, arch) = (
            decisions[index].target.kernel.clone(),
            decisions[index].target.arch.clone(),
        );
        let mut deferred = Vec::new();
        let mut failed = None;
        for dep in &conf.build_depends {
            if let Some(&dep_node) = node_of.get(dep) {
                graph.add_edge(dep_node, node, ());
                let dep_target = decisions[graph[dep_node]].target.clone();
                decisions[index].after.push(dep_target);
            } else if tree::installed_version(&host.paths, dep, &kernel, &arch).is_some() {
                // Already there for this kernel.
            } else if let Some(dep_index) = decisions.iter().position(|d| d.target.module == *dep) {
                // Upstream treats an excluded (77) dependency as satisfied.
                if !matches!(decisions[dep_index].left, Some(Left::Excluded(_))) {
                    failed = Some(format!(
                        "dependency {dep} will not be built: {}",
                        describe(&decisions[dep_index].left)
                    ));
                }
            } else if registered.contains_key(dep.as_str()) {
                failed = Some(format!(
                    "dependency {dep} is registered with DKMS but not set to AUTOINSTALL"
                ));
            } else {
                deferred.push(dep.clone());
            }
        }
        if let Some(reason) = failed {
            decisions[index].left = Some(Left::Failed(reason));
        } else if !deferred.is_empty() {
            decisions[index].left = Some(Left::Deferred(deferred));
        }
    }

    // Cycles fail their members; the message follows the BUILD_DEPENDS edges
    // (`a -> b` = a needs b) from the member that sorts first, back to it.
    for component in petgraph::algo::kosaraju_scc(&graph) {
        let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
        if component.len() > 1 || self_loop {
            let name = |n: NodeIndex| decisions[graph[n]].target.module.clone();
            let start = component
                .iter()
                .copied()
                .min_by_key(|n| name(*n))
                .unwrap_or(component[0]);
            let cycle = cycle_through(&graph, &component, start)
                .into_iter()
                .map(name)
                .collect::<Vec<_>>()
                .join(" -> ");
            for n in &component {
                decisions[graph[*n]].left =
                    Some(Left::Failed(format!("dependency cycle: {cycle}")));
            }
        }
    }

    // Anything depending on a left-out target is left out too (transitively).
    let mut changed = true;
    while changed {
        changed = false;
        for index in 0..decisions.len() {
            if decisions[index].left.is_some() {
                continue;
            }
            let blocked = decisions[index].after.iter().find_map(|dep| {
                let d = decisions.iter().find(|d| d.target == *dep)?;
                d.left
                    .as_ref()
                    .map(|l| (dep.module.clone(), describe(&Some(l.clone()))))
            });
            if let Some((dep, why)) = blocked {
                decisions[index].left = Some(Left::Failed(format!(
                    "dependency {dep} will not be built: {why}"
                )));
                changed = true;
            }
        }
    }

    // Dependencies first; ties keep the listing order.
    let graph = graph.filter_map(
        |_, &i| decisions[i].left.is_none().then_some(i),
        |_, _| Some(()),
    );
    let order: Vec<usize> = match petgraph::algo::toposort(&graph, None) {
        Ok(nodes) => {
            // toposort is not stable; re-derive a stable order by depth.
            let mut depth: HashMap<usize, usize> = HashMap::new();
            for n in &nodes {
                let d = graph
                    .neighbors_directed(*n, petgraph::Direction::Incoming)
                    .map(|p| depth.get(&graph[p]).copied().unwrap_or(0) + 1)
                    .max()
                    .unwrap_or(0);
                depth.insert(graph[*n], d);
            }
            let mut order: Vec<usize> = nodes.iter().map(|n| graph[*n]).collect();
            order.sort_by_key(|i| (depth[i], *i));
            order
        }
        Err(_) => Vec::new(),
    };
    let mut ordered: Vec<Decision> = order.iter().map(|&i| decisions[i].clone()).collect();
    ordered.extend(decisions.into_iter().filter(|d| d.left.is_some()));
    ordered
}

/// The shortest walk from `start` along "depends on" (edges point from a dependency
/// to its dependent, so it follows them backwards) inside `component`, back to
/// `start`, both ends included.
fn cycle_through(
    graph: &DiGraph<usize, ()>,
    component: &[NodeIndex],
    start: NodeIndex,
) -> Vec<NodeIndex> {
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for needed in graph.neighbors_directed(node, petgraph::Direction::Incoming) {
            if !component.contains(&needed) {
                continue;
            }
            if needed == start {
                let mut path = vec![start];
                let mut at = node;
                while at != start {
                    path.push(at);
                    at = parent[&at];
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = parent.entry(needed) {
                slot.insert(node);
                queue.push_back(needed);
            }
        }
    }
    vec![start, start]
}

fn describe(left: &Option<Left>) -> String {
    match left {
        None => "it is being built".into(),
        Some(Left::AlreadyInstalled) => "it is installed".into(),
        Some(Left::Excluded(r)) => format!("excluded: {r}"),
        Some(Left::NoHeaders) => "no kernel headers".into(),
        Some(Left::Deferred(d)) => format!("it waits for {}", d.join(", ")),
        Some(Left::Failed(r)) => r.clone(),
    }
}
