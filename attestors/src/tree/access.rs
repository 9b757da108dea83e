//! Reading a tree only where its reader could: mode bits and POSIX ACLs
//! checked against another process's credentials.
//!
//! The agent runs as root and would otherwise digest any directory a
//! workload names, telling an unprivileged user whether files it cannot
//! read have a given content. So when the reader is a workload, every
//! directory a path is resolved through must be searchable by it, every
//! directory of the tree listable (read and search) and every file readable,
//! checked as the kernel's `generic_permission` does: the owner's bits for
//! the owner, else the group's bits when the file's group is among the
//! reader's (its fs gid or a supplementary group), else the others' bits; a
//! file with a POSIX access ACL (`system.posix_acl_access`) is checked
//! against its entries and mask. A reader with uid 0 is not checked.
//!
//! What this does not see: capabilities (a non-root workload holding
//! `CAP_DAC_READ_SEARCH` is refused what it could read), LSM policies
//! (SELinux, AppArmor: a workload they confine may be allowed what they
//! would deny), and `fs.protected_symlinks`.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use rustix::fs::Stat;

/// Whose permissions apply when a tree is read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reader {
    /// The calling process itself: the kernel checks as it reads.
    Caller,
    /// Another process: checked against its credentials before anything is
    /// read.
    As(Credentials),
}

/// A process's file-system credentials (`/proc/<pid>/status`: the fs uid,
/// the fs gid and the supplementary groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The fs uid.
    pub uid: u32,
    /// The fs gid.
    pub gid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
}

/// What a reader needs of a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Look names up in a directory (`x`).
    Search,
    /// List a directory (`r` and `x`).
    List,
    /// Read a file (`r`).
    Read,
}

impl Access {
    /// The permission bits needed (`r` = 4, `x` = 1).
    fn bits(self) -> u32 {
        match self {
            Access::Search => 1,
            Access::List => 5,
            Access::Read => 4,
        }
    }

    /// The verb for messages.
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Access::Search => "search",
            Access::List => "list",
            Access::Read => "read",
        }
    }
}

/// The owner, group and mode of a file, from either status type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl From<&Stat> for Owner {
    fn from(stat: &Stat) -> Self {
        Owner {
            uid: stat.st_uid,
            gid: stat.st_gid,
            mode: stat.st_mode,
        }
    }
}

impl From<&Metadata> for Owner {
    fn from(meta: &Metadata) -> Self {
        Owner {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        }
    }
}

impl Reader {
    /// Whether this reader may `access` a file owned as `owner`; `acl`
    /// reads the file's access ACL when one could matter.
    pub(crate) fn may(
        &self,
        owner: impl Into<Owner>,
        access: Access,
        acl: impl FnOnce() -> Option<Vec<u8>>,
    ) -> bool {
        let Reader::As(creds) = self else {
            return true;
        };
        creds.may(owner.into(), access.bits(), acl)
    }

    /// The uid checked, for messages (0 for the caller itself).
    pub(crate) fn uid(&self) -> u32 {
        match self {
            Reader::Caller => 0,
            Reader::As(creds) => creds.uid,
        }
    }
}

impl Credentials {
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    fn may(&self, owner: Owner, want: u32, acl: impl FnOnce() -> Option<Vec<u8>>) -> bool {
        if self.uid == 0 {
            return true;
        }
        let grants = |perm: u32| perm & want == want;
        if self.uid == owner.uid {
            // The owner's ACL entry is the mode's owner bits.
            return grants(owner.mode >> 6 & 7);
        }
        if let Some(acl) = acl() {
            return self.acl_grants(&acl, owner, want);
        }
        if self.in_group(owner.gid) {
            grants(owner.mode >> 3 & 7)
        } else {
            grants(owner.mode & 7)
        }
    }

    /// POSIX.1e access check of a non-owner against an ACL in the kernel's
    /// xattr format (a version-2 header, then 8-byte entries: tag, perm,
    /// id). An ACL that does not parse grants nothing.
    fn acl_grants(&self, acl: &[u8], owner: Owner, want: u32) -> bool {
        const USER: u16 = 0x02;
        const GROUP_OBJ: u16 = 0x04;
        const GROUP: u16 = 0x08;
        const MASK: u16 = 0x10;
        const OTHER: u16 = 0x20;
        let Some((header, body)) = acl.split_first_chunk::<4>() else {
            return false;
        };
        if u32::from_le_bytes(*header) != 2 || body.len() % 8 != 0 {
            return false;
        }
        let entries: Vec<(u16, u32, u32)> = body
            .chunks_exact(8)
            .map(|e| {
                let tag = u16::from_le_bytes([e[0], e[1]]);
                let perm = u32::from(u16::from_le_bytes([e[2], e[3]]));
                let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                (tag, perm, id)
            })
            .collect();
        let mask = entries
            .iter()
            .find(|(tag, ..)| *tag == MASK)
            .map_or(7, |(_, perm, _)| *perm);
        let grants = |perm: u32| perm & mask & want == want;
        if let Some((_, perm, _)) = entries
            .iter()
            .find(|(tag, _, id)| *tag == USER && *id == self.uid)
        {
            return grants(*perm);
        }
        let mut matched = false;
        for (tag, perm, id) in &entries {
            let member = match *tag {
                GROUP_OBJ => self.in_group(owner.gid),
                GROUP => self.in_group(*id),
                _ => false,
            };
            if member {
                if grants(*perm) {
                    return true;
                }
                matched = true;
            }
        }
        if matched {
            return false;
        }
        entries
            .iter()
            .find(|(tag, ..)| *tag == OTHER)
            .is_some_and(|(_, perm, _)| perm & want == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn owner(uid: u32, gid: u32, mode: u32) -> Owner {
        Owner { uid, gid, mode }
    }

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut out = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            out.extend(tag.to_le_bytes());
            out.extend(perm.to_le_bytes());
            out.extend(id.to_le_bytes());
        }
        out
    }

    #[test]
    fn mode_bits_are_checked_as_the_kernel_does() {
        let none = || None;
        let nobody = creds(65534, 65534, &[]);
        assert!(!nobody.may(owner(0, 0, 0o700), 4, none));
        assert!(nobody.may(owner(0, 0, 0o704), 4, none));
        assert!(!nobody.may(owner(0, 0, 0o704), 5, none), "no search bit");
        // The owner's bits decide for the owner, even when others may read.
        assert!(!creds(7, 7, &[]).may(owner(7, 7, 0o077), 4, none));
        // A supplementary group gets the group's bits, not the others'.
        assert!(creds(7, 7, &[30]).may(owner(0, 30, 0o750), 5, none));
        assert!(!creds(7, 7, &[30]).may(owner(0, 30, 0o707), 4, none));
        assert!(creds(0, 0, &[]).may(owner(5, 5, 0), 5, none), "root passes");
        assert!(Reader::Caller.may(owner(5, 5, 0), Access::List, none));
    }

    #[test]
    fn an_acl_is_checked_with_its_mask_and_fails_closed() {
        let nobody = creds(65534, 65534, &[100]);
        let file = owner(0, 0, 0o644);
        // user:65534:--- denies what the others' r would grant.
        let deny = acl(&[
            (0x01, 6, 0),
            (0x02, 0, 65534),
            (0x04, 4, 0),
            (0x10, 4, 0),
            (0x20, 4, 0),
        ]);
        assert!(!nobody.may(file, 4, || Some(deny.clone())));
        // group:100:r-- grants, unless the mask takes it away.
        let grant = acl(&[
            (0x01, 6, 0),
            (0x04, 0, 0),
            (0x08, 4, 100),
            (0x10, 4, 0),
            (0x20, 0, 0),
        ]);
        assert!(nobody.may(owner(0, 0, 0o600), 4, || Some(grant.clone())));
        let masked = acl(&[
            (0x01, 6, 0),
            (0x04, 0, 0),
            (0x08, 4, 100),
            (0x10, 0, 0),
            (0x20, 0, 0),
        ]);
        assert!(!nobody.may(owner(0, 0, 0o600), 4, || Some(masked.clone())));
        // An unreadable or malformed ACL grants nothing.
        assert!(!nobody.may(file, 4, || Some(Vec::new())));
        assert!(!nobody.may(file, 4, || Some(vec![1, 0, 0, 0])));
    }
}
