//! Who may do what: staff roles, and the part of the directories a staff member's acts reach.

use super::dn::{dn_within, normalise_dn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only: the audit log.
    Auditor,
    /// Reset, unlock, force a change and revoke methods, for the people in scope.
    Helpdesk,
    /// Everything, everyone: staff accounts, health, audit, and the helpdesk's acts.
    Administrator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "administrator" => Some(Role::Administrator),
            "helpdesk" => Some(Role::Helpdesk),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Helpdesk => "helpdesk",
            Role::Auditor => "auditor",
        }
    }

    /// May act on people (search, reset, unlock…).
    pub fn acts_on_people(self) -> bool {
        matches!(self, Role::Administrator | Role::Helpdesk)
    }

    /// May read the audit log.
    pub fn reads_audit(self) -> bool {
        matches!(self, Role::Administrator | Role::Auditor)
    }
}

/// A person as a scope places them: their directory, DN and groups.
pub trait Placed {
    fn directory(&self) -> &str;
    fn dn(&self) -> &str;
    /// Their groups' DNs (compared normalised).
    fn groups(&self) -> Vec<String>;
    /// A cloud-only account: in no directory, below no DN, in no group.
    fn is_cloud(&self) -> bool;
}

/// Who the helpdesk may see: each non-empty list narrows (a person must be in one of the
/// directories, below one of the base DNs, and a member of one of the groups).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub directories: Vec<String>,
    #[serde(default)]
    pub base_dns: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// With no list filled in: everyone, when set; nobody otherwise (a scope left empty by
    /// mistake must not open the whole directory).
    #[serde(default)]
    pub everyone: bool,
}

/// The scope in words, for the audit and the staff list: "everyone", "nobody", or what narrows
/// it ("directories corp; under OU=Staff,DC=corp,DC=test; in groups CN=Helpdesk,…").
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_everyone() {
            return f.write_str("everyone");
        }
        if self.is_nobody() {
            return f.write_str("nobody");
        }
        let parts: Vec<String> =
            [("directories", &self.directories), ("under", &self.base_dns), ("in groups", &self.groups)]
                .into_iter()
                .filter(|(_, list)| !list.is_empty())
                .map(|(what, list)| format!("{what} {}", list.join(" or ")))
                .collect();
        f.write_str(&parts.join("; "))
    }
}

impl Scope {
    /// Everyone, in every directory.
    pub fn everyone() -> Scope {
        Scope { everyone: true, ..Default::default() }
    }

    /// No list narrows it.
    fn unnarrowed(&self) -> bool {
        self.directories.is_empty() && self.base_dns.is_empty() && self.groups.is_empty()
    }

    pub fn is_everyone(&self) -> bool {
        self.unnarrowed() && self.everyone
    }

    /// Covers nobody: nothing narrows it, and "everyone" was not chosen.
    pub fn is_nobody(&self) -> bool {
        self.unnarrowed() && !self.everyone
    }

    /// Whether the person is within this scope (the one check every helpdesk act makes).
    pub fn covers(&self, p: &impl Placed) -> bool {
        if self.is_nobody() {
            return false;
        }
        if p.is_cloud() {
            // Cloud-only accounts are in no directory, below no DN and in no group.
            return self.is_everyone();
        }
        let groups: Vec<String> = p.groups().iter().map(|g| normalise_dn(g)).collect();
        (self.directories.is_empty() || self.directories.iter().any(|d| d == p.directory()))
            && (self.base_dns.is_empty() || self.base_dns.iter().any(|b| dn_within(p.dn(), b)))
            && (self.groups.is_empty() || self.groups.iter().any(|g| groups.contains(&normalise_dn(g))))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_reads_as_words() {
        assert_eq!(Scope::everyone().to_string(), "everyone");
        assert_eq!(Scope::default().to_string(), "nobody");
        let narrow = Scope { directories: vec!["corp".into()], groups: vec!["CN=Helpdesk".into()], ..Scope::default() };
        assert_eq!(narrow.to_string(), "directories corp; in groups CN=Helpdesk");
    }
}
