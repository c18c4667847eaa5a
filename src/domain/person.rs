//! A person as a directory describes them to the portal.

use super::{Anchor, EmailAddress};
use serde::{Deserialize, Serialize};

/// One person in a directory's sync scope: what the portal needs to find them and reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedUser {
    pub anchor: Anchor,
    pub dn: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    pub display_name: String,
    pub enabled: bool,
    pub locked: bool,
}
