//! Container ids from cgroup paths of the common runtimes.

/// The 64-hex container id in a cgroup path: docker (`/docker/<id>`,
/// `docker-<id>.scope`), containerd (`cri-containerd-<id>.scope`), CRI-O
/// (`crio-<id>.scope`), podman (`libpod-<id>.scope`), and kubepods paths
/// ending in one of those or a bare id.
pub fn container_id(cgroup_path: &str) -> Option<String> {
    cgroup_path.rsplit('/').find_map(|segment| {
        let segment = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = ["docker-", "cri-containerd-", "crio-", "libpod-"]
            .iter()
            .find_map(|prefix| segment.strip_prefix(prefix))
            .unwrap_or(segment);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4a0c0e5b2d9f8a7c6b5a493827160f0e1d2c3b4a5968778695a4b3c2d1e0f9";

    #[test]
    fn common_runtimes() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/besteffort/pod1234/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/kubepods.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-1000.slice/session-3.scope"),
            None
        );
        assert_eq!(container_id(""), None);
    }
}
