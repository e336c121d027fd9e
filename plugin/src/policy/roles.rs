//! Role inheritance (`role_inherits`) compiled into a transitive closure.

use std::collections::BTreeMap;

/// Longest role name accepted (in config and in tokens).
pub const MAX_ROLE_LEN: usize = 256;

/// A role inheritance graph whose cycles were refused and whose closure is
/// precomputed, so a request only looks roles up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleGraph {
    /// role -> every role it grants, transitively (sorted, without itself).
    implied: BTreeMap<String, Vec<String>>,
}

/// `role_inherits` contains a cycle; `cycle` lists it, first role repeated at the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role_inherits has a cycle: {}", cycle.join(" -> "))]
pub struct RoleCycle {
    pub cycle: Vec<String>,
}

impl RoleGraph {
    /// Compile `role_inherits`. Roles that are inherited but not declared are
    /// fine (they grant nothing further); cycles are an error.
    pub fn new(inherits: &BTreeMap<String, Vec<String>>) -> Result<RoleGraph, RoleCycle> {
        let mut implied = BTreeMap::new();
        for role in inherits.keys() {
            let mut stack = vec![role.clone()];
            let mut granted = Vec::new();
            collect(inherits, role, &mut stack, &mut granted)?;
            granted.sort();
            granted.dedup();
            implied.insert(role.clone(), granted);
        }
        Ok(RoleGraph { implied })
    }

    /// The roles granted by `claimed`, including the claimed roles themselves:
    /// sorted and deduplicated.
    pub fn effective_roles<'a>(&self, claimed: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut roles = Vec::new();
        for role in claimed {
            roles.push(role.to_owned());
            if let Some(granted) = self.implied.get(role) {
                roles.extend(granted.iter().cloned());
            }
        }
        roles.sort();
        roles.dedup();
        roles
    }
}

/// Depth-first walk from `role`; `stack` is the current path (to report a cycle).
fn collect(
    inherits: &BTreeMap<String, Vec<String>>,
    role: &str,
    stack: &mut Vec<String>,
    granted: &mut Vec<String>,
) -> Result<(), RoleCycle> {
    let Some(children) = inherits.get(role) else {
        return Ok(());
    };
    for child in children {
        if let Some(start) = stack.iter().position(|r| r == child) {
            let mut cycle = stack[start..].to_vec();
            cycle.push(child.clone());
            return Err(RoleCycle { cycle });
        }
        if granted.contains(child) {
            continue;
        }
        granted.push(child.clone());
        stack.push(child.clone());
        collect(inherits, child, stack, granted)?;
        stack.pop();
    }
    Ok(())
}

/// Role names travel in the comma-separated `x-avb-roles` header, so they
/// must be header-safe: printable ASCII, no space, no comma.
pub fn is_valid_role_name(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= MAX_ROLE_LEN
        && role.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherits(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(role, granted)| {
                (
                    role.to_string(),
                    granted.iter().map(|g| g.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn inheritance_is_transitive() {
        let graph = RoleGraph::new(&inherits(&[
            ("PLATFORM", &["ADMIN"]),
            ("ADMIN", &["OPERATOR", "DEVELOPER"]),
        ]))
        .unwrap();
        assert_eq!(
            graph.effective_roles(["PLATFORM"]),
            ["ADMIN", "DEVELOPER", "OPERATOR", "PLATFORM"]
        );
        assert_eq!(graph.effective_roles(["OPERATOR"]), ["OPERATOR"]);
    }

    #[test]
    fn effective_roles_are_sorted_and_deduplicated() {
        let graph = RoleGraph::new(&inherits(&[("ADMIN", &["OPERATOR"])])).unwrap();
        assert_eq!(
            graph.effective_roles(["OPERATOR", "ADMIN", "OPERATOR"]),
            ["ADMIN", "OPERATOR"]
        );
        assert!(graph.effective_roles([]).is_empty());
    }

    #[test]
    fn unknown_inherited_roles_are_fine() {
        let graph = RoleGraph::new(&inherits(&[("ADMIN", &["NOBODY_DECLARES_ME"])])).unwrap();
        assert_eq!(
            graph.effective_roles(["ADMIN"]),
            ["ADMIN", "NOBODY_DECLARES_ME"]
        );
    }

    #[test]
    fn diamond_is_not_a_cycle() {
        let graph = RoleGraph::new(&inherits(&[
            ("A", &["B", "C"]),
            ("B", &["D"]),
            ("C", &["D"]),
        ]))
        .unwrap();
        assert_eq!(graph.effective_roles(["A"]), ["A", "B", "C", "D"]);
    }

    #[test]
    fn cycle_is_refused_and_listed() {
        let err =
            RoleGraph::new(&inherits(&[("A", &["B"]), ("B", &["C"]), ("C", &["A"])])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "role_inherits has a cycle: A -> B -> C -> A"
        );
    }

    #[test]
    fn self_inheritance_is_a_cycle() {
        let err = RoleGraph::new(&inherits(&[("A", &["A"])])).unwrap_err();
        assert_eq!(err.cycle, ["A", "A"]);
    }

    #[test]
    fn role_names_must_be_header_safe() {
        assert!(is_valid_role_name("ADMIN"));
        assert!(is_valid_role_name("default-roles-avb"));
        assert!(!is_valid_role_name(""));
        assert!(!is_valid_role_name("A,B"));
        assert!(!is_valid_role_name("A B"));
        assert!(!is_valid_role_name("A\nB"));
    }
}
