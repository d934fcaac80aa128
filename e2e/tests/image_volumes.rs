//! Image volumes (CRI `Mount.image`, KEP-4639) through the socket: an
//! image's filesystem read-only in a container, `image_sub_path` resolved
//! inside the image, the image kept while mounted, nothing left after.

use std::time::Duration;

use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config};

const BUSYBOX: &str = "crust-test/busybox:latest";
const MULTILAYER: &str = "crust-test/multilayer:latest";
const ARTIFACT: &str = "crust-test/artifact:latest";
const LINKS: &str = "crust-test/hostile:volume-links";

/// A mount of `image` (by the ref PullImage answered, as kubelet passes it).
fn image_mount(container_path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

async fn sh(c: &mut CriClient, id: &str, script: &str) -> (i32, String) {
    let r = c.exec_sync(id, &["sh", "-c", script], 20).await.unwrap();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out)
}

/// What the container's /proc/self/mountinfo says of the mount at `path`.
async fn mount_options(c: &mut CriClient, id: &str, path: &str) -> String {
    let (code, out) = sh(
        c,
        id,
        &format!("awk '$5 == \"{path}\" {{ print $6 }}' /proc/self/mountinfo"),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    out.trim().to_string()
}

#[tokio::test]
async fn image_volumes_mount_read_only_resolve_sub_paths_inside_and_pin_the_image() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let multilayer = c.pull(&image_ref(MULTILAYER)).await.unwrap();
    let artifact = c.pull(&image_ref(ARTIFACT)).await.unwrap();
    let links = c.pull(&image_ref(LINKS)).await.unwrap();
    let cfg = pod_config(&crustd, "imagevol");
    let pod = c.run_pod(&cfg).await;

    let mut config = container_config("reader", &image_ref(BUSYBOX), &["sleep", "3600"]);
    config.mounts = vec![
        // A whole image of five layers, by its id.
        image_mount("/multi", &multilayer, ""),
        // A directory and a file (through an in-image symlink) of it.
        image_mount("/dir1", &multilayer, "data/dir1"),
        image_mount("/a.txt", &multilayer, "data/link"),
        // One layer without an OS, by tag.
        image_mount("/artifact", &image_ref(ARTIFACT), ""),
        // "vol-root -> /" resolves to the image's root, never the host's.
        image_mount("/links", &links, "vol-root"),
    ];
    let id = c.run_container(&pod, &cfg, config).await;

    let (code, out) = sh(&mut c, &id, "cat /multi/data/a.txt; ls /multi/data/opaque").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "layer 3: a\nnew.txt\n"),
        "layers merged"
    );
    let (code, out) = sh(&mut c, &id, "ls /dir1; cat /a.txt").await;
    assert_eq!((code, out.as_str()), (0, "keep.txt\nlayer 3: a\n"));
    let (code, out) = sh(&mut c, &id, "cat /artifact/artifact/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hello from an image volume\n"));
    let (code, out) = sh(&mut c, &id, "ls /links").await;
    assert_eq!(code, 0, "{out}");
    let names: Vec<&str> = out.split_whitespace().collect();
    assert!(
        names.contains(&"vol-proc") && names.contains(&"bin"),
        "the image's root: {names:?}"
    );
    assert!(!names.contains(&"work"), "never the host's root: {names:?}");

    // Read-only, and no setuid or device nodes of the image's.
    for path in ["/multi", "/dir1", "/a.txt", "/artifact"] {
        let options = mount_options(&mut c, &id, path).await;
        let options: Vec<&str> = options.split(',').collect();
        for want in ["ro", "nosuid", "nodev"] {
            assert!(options.contains(&want), "{path}: {options:?}");
        }
    }
    for target in [
        "/multi/new",
        "/dir1/keep.txt",
        "/a.txt",
        "/artifact/artifact/x",
    ] {
        let (code, out) = sh(&mut c, &id, &format!("echo x > {target}")).await;
        assert_ne!(code, 0, "{target} is writable");
        assert!(out.contains("Read-only file system"), "{target}: {out}");
    }

    // ContainerStatus reports the image mounts.
    let status = c.container_status(&id).await;
    let dir1 = status
        .mounts
        .iter()
        .find(|m| m.container_path == "/dir1")
        .unwrap_or_else(|| panic!("{:?}", status.mounts));
    assert_eq!(dir1.image.as_ref().unwrap().image, multilayer);
    assert_eq!(dir1.image_sub_path, "data/dir1");
    assert!(dir1.readonly);

    // The image cannot go while a container mounts it.
    for name in [multilayer.clone(), image_ref(ARTIFACT)] {
        let err = c
            .image
            .remove_image(cri::RemoveImageRequest {
                image: Some(crust_e2e::image_spec(&name)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(&id), "{}", err.message());
    }
    assert!(c.image_status(&image_ref(ARTIFACT)).await.is_some());

    // Once the container is gone, so are its mounts, and the image can go.
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    c.wait_exited(&id, Duration::from_secs(10)).await;
    c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&id))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert!(!crustd.state().join("image-mounts").join(&id).exists());
    c.remove_image(&artifact).await;
    assert!(c.image_status(&artifact).await.is_none());
    c.remove_pod(&pod).await;
    assert!(
        crustd.mounts_left().is_empty(),
        "{:?}",
        crustd.mounts_left()
    );
}

#[tokio::test]
async fn image_volume_mistakes_are_refused_with_the_mount_named_and_leave_nothing() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let links = c.pull(&image_ref(LINKS)).await.unwrap();
    let cfg = pod_config(&crustd, "imagevol-bad");
    let pod = c.run_pod(&cfg).await;
    let cases = [
        // Not pulled.
        (
            image_mount("/v", &image_ref(ARTIFACT), ""),
            tonic::Code::NotFound,
            "pull it first",
        ),
        // Lexical escapes.
        (
            image_mount("/v", &links, "../../../etc"),
            tonic::Code::InvalidArgument,
            "'..'",
        ),
        (
            image_mount("/v", &links, "/etc"),
            tonic::Code::InvalidArgument,
            "relative",
        ),
        // Symlinks out of the image resolve inside it, where these do not
        // exist: never the host's /proc/1/root/tmp or /tmp.
        (
            image_mount("/v", &links, "vol-host-tmp"),
            tonic::Code::InvalidArgument,
            "does not exist in the image",
        ),
        (
            image_mount("/v", &links, "vol-proc/etc"),
            tonic::Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/v", &links, "no/such/dir"),
            tonic::Code::InvalidArgument,
            "does not exist in the image",
        ),
    ];
    for (n, (mount, code, text)) in cases.into_iter().enumerate() {
        let mut config =
            container_config(&format!("bad{n}"), &image_ref(BUSYBOX), &["sleep", "3600"]);
        let sub = mount.image_sub_path.clone();
        config.mounts = vec![mount];
        let err = c.create_container(&pod, &cfg, config).await.unwrap_err();
        assert_eq!(err.code(), code, "{sub:?}: {err:?}");
        assert!(
            err.message().contains("mounts[/v]") && err.message().contains(text),
            "{sub:?}: {}",
            err.message()
        );
    }
    let containers = c
        .runtime
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(containers.is_empty(), "{containers:?}");
    let dir = crustd.state().join("image-mounts");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    c.remove_pod(&pod).await;
    assert!(
        crustd.mounts_left().is_empty(),
        "{:?}",
        crustd.mounts_left()
    );
}

/// In a pod with its own user namespace (hostUsers: false) the image's
/// files belong to the pod's root, as in its rootfs: the layers are
/// idmapped to the pod, never shown as the overflow uid.
#[tokio::test]
async fn image_volumes_in_a_user_namespace_pod_are_owned_by_the_pods_root() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let multilayer = c.pull(&image_ref(MULTILAYER)).await.unwrap();
    let maps = || {
        vec![cri::IdMapping {
            container_id: 0,
            host_id: 300000,
            length: 65536,
        }]
    };
    let mut cfg = pod_config(&crustd, "imagevol-userns");
    crust_e2e::set_pod_namespaces(
        &mut cfg,
        cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: maps(),
                gids: maps(),
            }),
            ..Default::default()
        },
    );
    let pod = c.run_pod(&cfg).await;
    let mut config = container_config("reader", &image_ref(BUSYBOX), &["sleep", "3600"]);
    let mut mount = image_mount("/multi", &multilayer, "data");
    // kubelet sets the pod's mappings on every mount of such a pod.
    mount.uid_mappings = maps();
    mount.gid_mappings = maps();
    config.mounts = vec![mount];
    let id = c.run_container(&pod, &cfg, config).await;
    let (code, out) = sh(
        &mut c,
        &id,
        "stat -c '%u:%g' /multi/a.txt /multi/owned; cat /multi/a.txt",
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "0:0\n1000:1000\nlayer 3: a\n"),
        "ids as the image has them"
    );
    let (code, out) = sh(&mut c, &id, "echo x > /multi/a.txt").await;
    assert_ne!(code, 0, "{out}");
    c.remove_pod(&pod).await;
    assert!(
        crustd.mounts_left().is_empty(),
        "{:?}",
        crustd.mounts_left()
    );
}
