//! User and group lookup (names or numbers), for the tasks' identities.

/// The uid and primary gid of a user given by name or number. A number that has no
/// passwd entry (a minimal appliance image) is taken as uid = gid = that number.
pub fn resolve_user(user: &str) -> Option<(u32, u32)> {
    if let Ok(Some(entry)) = nix::unistd::User::from_name(user) {
        return Some((entry.uid.as_raw(), entry.gid.as_raw()));
    }
    let uid: u32 = user.parse().ok()?;
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(entry)) => Some((uid, entry.gid.as_raw())),
        _ => Some((uid, uid)),
    }
}

/// True when a user or group named in the configuration is root by its name or its
/// number (`root`, `0`, `00`, `+0`). Names that only resolve to 0 on this machine are
/// found by resolving them (`Config::check_environment`).
pub fn names_root(name: &str) -> bool {
    name == "root" || name.parse::<u32>() == Ok(0)
}

/// The gid of a group given by name or number.
pub fn resolve_group(group: &str) -> Option<u32> {
    if let Ok(Some(entry)) = nix::unistd::Group::from_name(group) {
        return Some(entry.gid.as_raw());
    }
    group.parse().ok()
}
