//! Security contexts enforced, not just translated (issue 7): every test
//! drives a real crustd over its CRI socket and looks at what the
//! container's processes can and cannot do.
//!
//! Two syscalls busybox cannot make on its own (io_uring_setup, and
//! geteuid after executing a setuid binary) are made by tiny static x86-64
//! ELF programs the tests write and bind-mount into the container.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config};

const BUSYBOX: &str = "crust-test/busybox:latest";
const USER_NUMERIC: &str = "crust-test/user-numeric:latest";
const USER_NAMED: &str = "crust-test/user-named:latest";

async fn ready(crustd: &Crustd) -> CriClient {
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    c
}

/// The result of an ExecSync, as text.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn sh(c: &mut CriClient, id: &str, script: &str) -> Out {
    let r = c
        .exec_sync(id, &["sh", "-c", script], 20)
        .await
        .unwrap_or_else(|e| panic!("exec {script:?} in {id}: {e:?}"));
    Out {
        code: r.exit_code,
        stdout: String::from_utf8_lossy(&r.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&r.stderr).trim().to_string(),
    }
}

/// A busybox container that sleeps, with `sc` as its security context.
fn sleeper(name: &str, sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
    with_sc(
        container_config(name, &image_ref(BUSYBOX), &["sleep", "3600"]),
        sc,
    )
}

fn with_sc(
    mut config: cri::ContainerConfig,
    sc: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context = Some(sc);
    config
}

fn uid(v: i64) -> Option<cri::Int64Value> {
    Some(cri::Int64Value { value: v })
}

fn caps(add: &[&str], drop: &[&str]) -> Option<cri::Capability> {
    Some(cri::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        add_ambient_capabilities: vec![],
    })
}

fn profile(
    t: cri::security_profile::ProfileType,
    localhost_ref: &str,
) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: localhost_ref.to_string(),
    })
}

/// A pod as kubelet sends it without shareProcessNamespace: a PID
/// namespace per container.
fn k8s_pod(crustd: &Crustd, name: &str) -> cri::PodSandboxConfig {
    let mut pod = pod_config(crustd, name);
    crust_e2e::set_pod_namespaces(
        &mut pod,
        cri::NamespaceOption {
            pid: cri::NamespaceMode::Container as i32,
            ..Default::default()
        },
    );
    // kubelet with seccompDefault: containers without a profile of their
    // own get RuntimeDefault (CRI's own default, no profile, is unconfined).
    pod_sc(&mut pod).seccomp = profile(cri::security_profile::ProfileType::RuntimeDefault, "");
    pod
}

fn pod_sc(pod: &mut cri::PodSandboxConfig) -> &mut cri::LinuxSandboxSecurityContext {
    pod.linux
        .as_mut()
        .unwrap()
        .security_context
        .get_or_insert_with(Default::default)
}

fn privileged_pod(crustd: &Crustd, name: &str) -> cri::PodSandboxConfig {
    let mut p = k8s_pod(crustd, name);
    pod_sc(&mut p).privileged = true;
    p
}

/// CreateContainer must fail with InvalidArgument and a message holding
/// every one of `words`.
async fn create_fails(
    c: &mut CriClient,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
    words: &[&str],
) {
    let err = c
        .create_container(pod, pod_cfg, config)
        .await
        .expect_err("CreateContainer must fail");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    for w in words {
        assert!(
            err.message().contains(w),
            "the error names {w:?}: {}",
            err.message()
        );
    }
}

/// A field of /proc/self/status as the container's processes see it.
async fn proc_status(c: &mut CriClient, id: &str, field: &str) -> String {
    let out = sh(c, id, "cat /proc/self/status").await;
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status:\n{}", out.stdout))
        .trim()
        .to_string()
}

/// The verbose ContainerStatus info (pid, bundle, runtimeSpec, ...).
async fn verbose_info(c: &mut CriClient, id: &str) -> serde_json::Value {
    let r = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&r.info["info"]).unwrap()
}

/// A field of /proc/<pid>/status of the container's own process (its
/// init), read on the host: unlike ExecSync processes, this is what the
/// container's workload runs as.
async fn main_status(c: &mut CriClient, id: &str, field: &str) -> String {
    let pid = verbose_info(c, id).await["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Runs `script` as the container's own process, to completion; returns
/// its exit code and what it wrote (stdout and stderr, in order, from the
/// CRI log).
async fn run_script(
    c: &mut CriClient,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    mut config: cri::ContainerConfig,
    script: &str,
) -> (i32, String) {
    config.command = ["sh", "-c", script].map(String::from).to_vec();
    let id = c.run_container(pod, pod_cfg, config).await;
    let status = c.wait_exited(&id, std::time::Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&status.log_path).unwrap_or_default();
    let text = log
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    (status.exit_code, text)
}

fn groups(s: &str) -> BTreeSet<u32> {
    s.split_whitespace().map(|g| g.parse().unwrap()).collect()
}

/// The OCI spec crustd wrote, from verbose ContainerStatus.
async fn runtime_spec(c: &mut CriClient, id: &str) -> serde_json::Value {
    verbose_info(c, id).await["runtimeSpec"].clone()
}

/// crustd's (= this test process's) capability bounding set: what a
/// privileged container gets.
fn host_cap_bnd() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string()
}

/// A directory of the test's own (0755 so any uid can enter it once it is
/// bind-mounted), removed with the test's crustd.
fn host_dir(crustd: &Crustd, name: &str) -> PathBuf {
    let dir = crustd.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn bind(container_path: &str, host_path: &Path, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: container_path.to_string(),
        host_path: host_path.display().to_string(),
        readonly,
        ..Default::default()
    }
}

/// Where the scratch page of [`tiny_elf`] programs is mapped.
const ELF_BASE: u64 = 0x40_0000;
const ELF_SCRATCH: u32 = 0x40_1000;

/// A static x86-64 ELF executable: one RWX PT_LOAD at ELF_BASE holding the
/// headers and `code` (the entry point), zero-filled up to ELF_BASE+0x2000,
/// so ELF_SCRATCH is a zeroed, writable page.
fn tiny_elf(code: &[u8]) -> Vec<u8> {
    let headers = 64 + 56;
    let mut e = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec(); // 64-bit, LE, SysV
    e.extend(2u16.to_le_bytes()); // ET_EXEC
    e.extend(62u16.to_le_bytes()); // EM_X86_64
    e.extend(1u32.to_le_bytes()); // EV_CURRENT
    e.extend((ELF_BASE + headers as u64).to_le_bytes()); // e_entry
    e.extend(64u64.to_le_bytes()); // e_phoff
    e.extend(0u64.to_le_bytes()); // e_shoff
    e.extend(0u32.to_le_bytes()); // e_flags
    e.extend(64u16.to_le_bytes()); // e_ehsize
    e.extend(56u16.to_le_bytes()); // e_phentsize
    e.extend(1u16.to_le_bytes()); // e_phnum
    e.extend(64u16.to_le_bytes()); // e_shentsize
    e.extend(0u16.to_le_bytes()); // e_shnum
    e.extend(0u16.to_le_bytes()); // e_shstrndx
    e.extend(1u32.to_le_bytes()); // PT_LOAD
    e.extend(7u32.to_le_bytes()); // PF_R | PF_W | PF_X
    e.extend(0u64.to_le_bytes()); // p_offset
    e.extend(ELF_BASE.to_le_bytes()); // p_vaddr
    e.extend(ELF_BASE.to_le_bytes()); // p_paddr
    e.extend(((headers + code.len()) as u64).to_le_bytes()); // p_filesz
    e.extend(0x2000u64.to_le_bytes()); // p_memsz
    e.extend(0x1000u64.to_le_bytes()); // p_align
    assert_eq!(e.len(), headers);
    e.extend_from_slice(code);
    e
}

/// exit(geteuid()): the exit status is the effective uid mod 256.
fn euid_program() -> Vec<u8> {
    tiny_elf(&[
        0xb8, 107, 0, 0, 0, // mov eax, SYS_geteuid
        0x0f, 0x05, // syscall
        0x89, 0xc7, // mov edi, eax
        0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
        0x0f, 0x05, // syscall
    ])
}

/// The tail of a program that made one syscall: exit 0 when it returned
/// a non-negative value, else exit with its errno.
const EXIT_WITH_ERRNO: [u8; 21] = [
    0x48, 0x85, 0xc0, // test rax, rax
    0x78, 0x04, // js errno
    0x31, 0xff, // xor edi, edi
    0xeb, 0x05, // jmp exit
    0x48, 0xf7, 0xd8, // errno: neg rax
    0x89, 0xc7, // mov edi, eax
    0xb8, 60, 0, 0, 0, // exit: mov eax, SYS_exit
    0x0f, 0x05, // syscall
];

/// io_uring_setup(1, &zeroed params): exit 0 when the ring was created,
/// else the errno (1 = EPERM from seccomp).
fn io_uring_program() -> Vec<u8> {
    let mut code = vec![0xbf, 1, 0, 0, 0]; // mov edi, 1 (entries)
    code.push(0xbe); // mov esi, ELF_SCRATCH (struct io_uring_params)
    code.extend(ELF_SCRATCH.to_le_bytes());
    code.extend([
        0xb8, 0xa9, 0x01, 0, 0, // mov eax, 425 (SYS_io_uring_setup)
        0x0f, 0x05, // syscall
    ]);
    code.extend(EXIT_WITH_ERRNO);
    tiny_elf(&code)
}

fn write_program(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

// ---------------------------------------------------------------------
// Users and groups

#[tokio::test]
async fn uid_and_supplemental_groups_merge_and_strict() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "groups");
    let pod = c.run_pod(&pod_cfg).await;
    let base = cri::LinuxContainerSecurityContext {
        run_as_user: uid(1000),
        supplemental_groups: vec![3000, 4000],
        ..Default::default()
    };
    // Merge (the default): the image's /etc/group adds "extra" (2000),
    // which lists user crust.
    let merge = c
        .run_container(&pod, &pod_cfg, sleeper("merge", base.clone()))
        .await;
    let id = sh(&mut c, &merge, "id").await;
    assert_eq!(
        id.stdout,
        "uid=1000(crust) gid=1000(crust) groups=1000(crust),2000(extra),3000,4000"
    );
    assert_eq!(
        groups(&proc_status(&mut c, &merge, "Groups").await),
        BTreeSet::from([1000, 2000, 3000, 4000])
    );
    assert_eq!(
        groups(&main_status(&mut c, &merge, "Groups").await),
        BTreeSet::from([1000, 2000, 3000, 4000]),
        "the container's own process, not only exec"
    );
    assert_eq!(
        proc_status(&mut c, &merge, "Uid").await,
        "1000\t1000\t1000\t1000"
    );
    // Strict: the image's memberships are not added.
    let strict = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "strict",
                cri::LinuxContainerSecurityContext {
                    supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
                    ..base.clone()
                },
            ),
        )
        .await;
    assert_eq!(
        groups(&proc_status(&mut c, &strict, "Groups").await),
        BTreeSet::from([1000, 3000, 4000])
    );
    assert_eq!(
        groups(&main_status(&mut c, &strict, "Groups").await),
        BTreeSet::from([1000, 3000, 4000])
    );
    // run_as_group replaces the primary group.
    let grouped = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "grouped",
                cri::LinuxContainerSecurityContext {
                    run_as_group: uid(3000),
                    ..base
                },
            ),
        )
        .await;
    let id = sh(&mut c, &grouped, "id -u; id -g").await;
    assert_eq!(id.stdout, "1000\n3000");
    assert_eq!(
        proc_status(&mut c, &grouped, "Gid").await,
        "3000\t3000\t3000\t3000"
    );
    // A non-root user holds no capabilities.
    assert_eq!(
        proc_status(&mut c, &merge, "CapEff").await,
        "0000000000000000"
    );
}

#[tokio::test]
async fn users_named_in_the_image() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    for image in [USER_NUMERIC, USER_NAMED] {
        c.pull(&image_ref(image)).await.unwrap();
    }
    let pod_cfg = k8s_pod(&crustd, "named");
    let pod = c.run_pod(&pod_cfg).await;
    // run_as_username resolves in the image's /etc/passwd and /etc/group.
    let by_name = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "byname",
                cri::LinuxContainerSecurityContext {
                    run_as_username: "crust".into(),
                    ..Default::default()
                },
            ),
        )
        .await;
    assert_eq!(
        sh(&mut c, &by_name, "id").await.stdout,
        "uid=1000(crust) gid=1000(crust) groups=1000(crust),2000(extra)"
    );
    let nobody = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "nobody",
                cri::LinuxContainerSecurityContext {
                    run_as_username: "nobody".into(),
                    ..Default::default()
                },
            ),
        )
        .await;
    assert_eq!(
        sh(&mut c, &nobody, "id -u; id -g").await.stdout,
        "65534\n65534"
    );
    // The image's USER: "crust:extra" and "1000".
    let named = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("image-named", &image_ref(USER_NAMED), &["sleep", "3600"]),
        )
        .await;
    // An explicit group replaces the passwd one (as Docker and containerd):
    // gid 2000, and 1000 is no supplementary group since /etc/group does
    // not list crust as a member of it.
    assert_eq!(
        sh(&mut c, &named, "id").await.stdout,
        "uid=1000(crust) gid=2000(extra) groups=2000(extra)"
    );
    let numeric = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config(
                "image-numeric",
                &image_ref(USER_NUMERIC),
                &["sleep", "3600"],
            ),
        )
        .await;
    assert_eq!(
        sh(&mut c, &numeric, "id").await.stdout,
        "uid=1000(crust) gid=1000(crust) groups=1000(crust),2000(extra)"
    );
    // The security context beats the image's USER.
    let root = c
        .run_container(
            &pod,
            &pod_cfg,
            with_sc(
                container_config("image-root", &image_ref(USER_NAMED), &["sleep", "3600"]),
                cri::LinuxContainerSecurityContext {
                    run_as_user: uid(0),
                    ..Default::default()
                },
            ),
        )
        .await;
    assert_eq!(sh(&mut c, &root, "id -u; id -g").await.stdout, "0\n0");
}

#[tokio::test]
async fn unknown_users_and_bad_ids_fail_create_container() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "badusers");
    let pod = c.run_pod(&pod_cfg).await;
    create_fails(
        &mut c,
        &pod,
        &pod_cfg,
        sleeper(
            "ghost",
            cri::LinuxContainerSecurityContext {
                run_as_username: "ghost".into(),
                ..Default::default()
            },
        ),
        &["run_as_username", "ghost", "/etc/passwd"],
    )
    .await;
    // Ids that would wrap into root or into "unchanged" (-1).
    for bad in [-1, 4294967295, 4294967296] {
        create_fails(
            &mut c,
            &pod,
            &pod_cfg,
            sleeper(
                "badid",
                cri::LinuxContainerSecurityContext {
                    run_as_user: uid(bad),
                    ..Default::default()
                },
            ),
            &["run_as_user", &bad.to_string()],
        )
        .await;
    }
    create_fails(
        &mut c,
        &pod,
        &pod_cfg,
        sleeper(
            "badgroup",
            cri::LinuxContainerSecurityContext {
                run_as_user: uid(1000),
                supplemental_groups: vec![-5],
                ..Default::default()
            },
        ),
        &["supplemental_groups", "-5"],
    )
    .await;
    // Nothing was left half-made.
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------
// Capabilities and privileged

#[tokio::test]
async fn dropping_net_raw_stops_ping() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "ping");
    let pod = c.run_pod(&pod_cfg).await;
    let with = c
        .run_container(&pod, &pod_cfg, sleeper("with", Default::default()))
        .await;
    let ping = sh(&mut c, &with, "ping -c1 -W2 127.0.0.1").await;
    assert_eq!(ping.code, 0, "NET_RAW is in the default set: {ping:?}");
    let without = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "without",
                cri::LinuxContainerSecurityContext {
                    capabilities: caps(&[], &["NET_RAW"]),
                    ..Default::default()
                },
            ),
        )
        .await;
    // busybox ping falls back to an ICMP datagram socket, which the pod's
    // network namespace does not allow either (no group is in the range).
    let range = sh(&mut c, &without, "cat /proc/sys/net/ipv4/ping_group_range").await;
    assert_eq!(range.stdout, "1\t0");
    let ping = sh(&mut c, &without, "ping -c1 -W2 127.0.0.1").await;
    assert_ne!(ping.code, 0, "ping without NET_RAW: {ping:?}");
    assert!(
        ping.stderr.contains("ermission denied") || ping.stderr.contains("not permitted"),
        "{ping:?}"
    );
    // CapBnd lost bit 13 (NET_RAW) and nothing else.
    let with_bnd = u64::from_str_radix(&proc_status(&mut c, &with, "CapBnd").await, 16).unwrap();
    let without_bnd =
        u64::from_str_radix(&proc_status(&mut c, &without, "CapBnd").await, 16).unwrap();
    assert_eq!(with_bnd & !without_bnd, 1 << 13);
    assert_eq!(without_bnd & !with_bnd, 0);
}

#[tokio::test]
async fn adding_net_admin_allows_creating_links() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "netadmin");
    let pod = c.run_pod(&pod_cfg).await;
    let plain = c
        .run_container(&pod, &pod_cfg, sleeper("plain", Default::default()))
        .await;
    let admin = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "admin",
                cri::LinuxContainerSecurityContext {
                    capabilities: caps(&["NET_ADMIN"], &[]),
                    ..Default::default()
                },
            ),
        )
        .await;
    // Without NET_ADMIN rtnetlink refuses before it looks at the link kind.
    for kind in ["dummy", "bridge"] {
        let add = sh(&mut c, &plain, &format!("ip link add crust0 type {kind}")).await;
        assert_ne!(add.code, 0, "{kind}: {add:?}");
        assert!(add.stderr.contains("not permitted"), "{kind}: {add:?}");
    }
    // With it. This kernel has no dummy driver, so the link is a bridge;
    // it lives in the pod's network namespace, not the host's.
    let add = sh(
        &mut c,
        &admin,
        "ip link add dummy0 type dummy 2>/dev/null || ip link add crust0 type bridge; ip -o link show",
    )
    .await;
    assert_eq!(add.code, 0, "{add:?}");
    assert!(
        add.stdout.contains("dummy0") || add.stdout.contains("crust0"),
        "{add:?}"
    );
    let seen = sh(&mut c, &plain, "ip -o link show").await;
    assert!(
        seen.stdout.contains("dummy0") || seen.stdout.contains("crust0"),
        "the other container shares the pod netns: {seen:?}"
    );
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert!(
        !host.contains("crust0:") && !host.contains("dummy0:"),
        "the link must not appear on the host"
    );
}

#[tokio::test]
async fn privileged_can_mount_unprivileged_cannot() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = privileged_pod(&crustd, "priv");
    let pod = c.run_pod(&pod_cfg).await;
    let privileged = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "privileged",
                cri::LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                },
            ),
        )
        .await;
    let plain = c
        .run_container(&pod, &pod_cfg, sleeper("plain", Default::default()))
        .await;
    let script = "mkdir -p /mnt && mount -t tmpfs none /mnt && grep ' /mnt ' /proc/mounts";
    let mounted = sh(&mut c, &privileged, script).await;
    assert_eq!(mounted.code, 0, "{mounted:?}");
    assert!(mounted.stdout.contains("tmpfs"), "{mounted:?}");
    let refused = sh(&mut c, &plain, script).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("ermission denied") || refused.stderr.contains("not permitted"),
        "{refused:?}"
    );
    // Privileged: every capability crust itself holds (its bounding set;
    // this host's may lack some), no seccomp, writable /sys. The plain
    // container in the same (privileged) pod gets none of that.
    assert_eq!(
        main_status(&mut c, &privileged, "CapEff").await,
        host_cap_bnd()
    );
    assert_eq!(main_status(&mut c, &privileged, "Seccomp").await, "0");
    assert_eq!(main_status(&mut c, &plain, "Seccomp").await, "2");
    // containerd's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
    // SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD
    // AUDIT_WRITE SETFCAP.
    assert_eq!(
        main_status(&mut c, &plain, "CapEff").await,
        "00000000a80425fb"
    );
    let sys = sh(&mut c, &privileged, "grep ' /sys ' /proc/mounts").await;
    assert!(sys.stdout.contains(" rw,"), "{sys:?}");
    let sys = sh(&mut c, &plain, "grep ' /sys ' /proc/mounts").await;
    assert!(sys.stdout.contains(" ro,"), "{sys:?}");
    // A privileged container needs a privileged pod.
    let plain_pod_cfg = k8s_pod(&crustd, "notpriv");
    let plain_pod = c.run_pod(&plain_pod_cfg).await;
    create_fails(
        &mut c,
        &plain_pod,
        &plain_pod_cfg,
        sleeper(
            "sneaky",
            cri::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        ),
        &["privileged"],
    )
    .await;
}

// ---------------------------------------------------------------------
// no_new_privs, read-only rootfs, masked and read-only paths

#[tokio::test]
async fn no_new_privs_blocks_setuid_gain() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "nnp");
    let pod = c.run_pod(&pod_cfg).await;
    // A setuid-root program that exits with its effective uid.
    let dir = host_dir(&crustd, "suid");
    write_program(&dir, "euid", &euid_program(), 0o4755);
    let config = |name: &str, nnp: bool| {
        let mut config = sleeper(
            name,
            cri::LinuxContainerSecurityContext {
                run_as_user: uid(1000),
                no_new_privs: nnp,
                ..Default::default()
            },
        );
        config.mounts = vec![bind("/suid", &dir, true)];
        config
    };
    let free = c.run_container(&pod, &pod_cfg, config("free", false)).await;
    let nnp = c.run_container(&pod, &pod_cfg, config("nnp", true)).await;
    assert_eq!(main_status(&mut c, &free, "NoNewPrivs").await, "0");
    assert_eq!(main_status(&mut c, &nnp, "NoNewPrivs").await, "1");
    // ExecSync processes too.
    assert_eq!(proc_status(&mut c, &free, "NoNewPrivs").await, "0");
    assert_eq!(proc_status(&mut c, &nnp, "NoNewPrivs").await, "1");
    if cfg!(target_arch = "x86_64") {
        let gained = sh(&mut c, &free, "/suid/euid; echo $?").await;
        assert_eq!(
            gained.stdout, "0",
            "setuid root works without NNP: {gained:?}"
        );
        let blocked = sh(&mut c, &nnp, "/suid/euid; echo $?").await;
        assert_eq!(
            blocked.stdout,
            (1000 % 256).to_string(),
            "NNP keeps euid 1000: {blocked:?}"
        );
    }
}

#[tokio::test]
async fn readonly_rootfs_refuses_writes() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "rorootfs");
    let pod = c.run_pod(&pod_cfg).await;
    let ro = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "ro",
                cri::LinuxContainerSecurityContext {
                    readonly_rootfs: true,
                    ..Default::default()
                },
            ),
        )
        .await;
    for path in ["/newfile", "/tmp/newfile", "/etc/passwd"] {
        let w = sh(&mut c, &ro, &format!("echo x >> {path}")).await;
        assert_ne!(w.code, 0, "{path}: {w:?}");
        assert!(w.stderr.contains("Read-only file system"), "{path}: {w:?}");
    }
    // The pod's /dev/shm stays writable.
    let shm = sh(&mut c, &ro, "echo x > /dev/shm/ok && cat /dev/shm/ok").await;
    assert_eq!(shm.stdout, "x", "{shm:?}");
    let rw = c
        .run_container(&pod, &pod_cfg, sleeper("rw", Default::default()))
        .await;
    assert_eq!(sh(&mut c, &rw, "echo x > /newfile").await.code, 0);
}

#[tokio::test]
async fn masked_and_readonly_paths() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = privileged_pod(&crustd, "masked");
    let pod = c.run_pod(&pod_cfg).await;
    let plain = c
        .run_container(&pod, &pod_cfg, sleeper("plain", Default::default()))
        .await;
    // containerd's defaults: masked files read as empty, masked dirs list
    // nothing, /proc/sys and friends are read-only.
    for path in ["/proc/timer_list", "/proc/keys"] {
        if Path::new(path).exists() {
            let r = sh(&mut c, &plain, &format!("wc -c < {path}")).await;
            assert_eq!(r.stdout, "0", "{path} must be masked: {r:?}");
        }
    }
    let firmware = sh(&mut c, &plain, "ls -A /sys/firmware | wc -l").await;
    assert_eq!(firmware.stdout, "0", "{firmware:?}");
    for path in ["/proc/sys/kernel/shm_rmid_forced", "/proc/sysrq-trigger"] {
        if !Path::new(path).exists() {
            continue; // no CONFIG_MAGIC_SYSRQ here
        }
        let w = sh(&mut c, &plain, &format!("echo 0 > {path}")).await;
        assert_ne!(w.code, 0, "{path}: {w:?}");
        assert!(w.stderr.contains("Read-only file system"), "{path}: {w:?}");
    }
    // The host has the contents the masks hide...
    let host_timer_list = std::fs::read_to_string("/proc/timer_list").unwrap_or_default();
    // ...and a privileged container sees them: nothing is masked there.
    let privileged = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "privileged",
                cri::LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                },
            ),
        )
        .await;
    if !host_timer_list.is_empty() {
        let r = sh(&mut c, &privileged, "head -c 17 /proc/timer_list").await;
        assert_eq!(r.stdout, "Timer List Versio", "{r:?}");
    }
    let w = sh(
        &mut c,
        &privileged,
        "echo 1 > /proc/sys/kernel/shm_rmid_forced",
    )
    .await;
    assert_eq!(w.code, 0, "/proc/sys is writable when privileged: {w:?}");
    // CRI lists replace the defaults (kubelet always sends them).
    let custom = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "custom",
                cri::LinuxContainerSecurityContext {
                    masked_paths: vec!["/proc/version".into()],
                    readonly_paths: vec!["/proc/sys".into()],
                    ..Default::default()
                },
            ),
        )
        .await;
    assert_eq!(
        sh(&mut c, &custom, "wc -c < /proc/version").await.stdout,
        "0"
    );
    assert_ne!(
        sh(&mut c, &plain, "wc -c < /proc/version").await.stdout,
        "0"
    );
    if !host_timer_list.is_empty() {
        let r = sh(&mut c, &custom, "head -c 17 /proc/timer_list").await;
        assert_eq!(r.stdout, "Timer List Versio", "{r:?}");
    }
}

// ---------------------------------------------------------------------
// Seccomp

#[tokio::test]
async fn runtime_default_seccomp_blocks_userns_and_io_uring() {
    use cri::security_profile::ProfileType;
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "seccomp");
    let pod = c.run_pod(&pod_cfg).await;
    let dir = host_dir(&crustd, "iouring");
    write_program(&dir, "io_uring", &io_uring_program(), 0o755);
    let config = |name: &str, p: Option<cri::SecurityProfile>| {
        let mut config = sleeper(
            name,
            cri::LinuxContainerSecurityContext {
                seccomp: p,
                ..Default::default()
            },
        );
        config.mounts = vec![bind("/probe", &dir, true)];
        config
    };
    // The probes run as the container's own process: unshare of a user
    // namespace, and io_uring_setup (x86-64 only).
    let io_uring = if cfg!(target_arch = "x86_64") {
        "/probe/io_uring; echo io_uring=$?"
    } else {
        "echo io_uring=skipped"
    };
    let script =
        format!("grep '^Seccomp:' /proc/self/status; unshare -U true; echo unshare=$?; {io_uring}");
    for (name, p, confined) in [
        ("confined", profile(ProfileType::RuntimeDefault, ""), true),
        // No profile of its own: the pod's (RuntimeDefault, see k8s_pod).
        ("unset", None, true),
        ("unconfined", profile(ProfileType::Unconfined, ""), false),
    ] {
        let (_, out) = run_script(&mut c, &pod, &pod_cfg, config(name, p), &script).await;
        let want = |line: &str| {
            assert!(
                out.lines().any(|l| l == line),
                "{name}: expected {line:?} in:\n{out}"
            )
        };
        if confined {
            want("Seccomp:\t2");
            want("unshare=1");
            assert!(out.contains("Operation not permitted"), "{name}:\n{out}");
            if cfg!(target_arch = "x86_64") {
                want("io_uring=1"); // EPERM
            }
        } else {
            want("Seccomp:\t0");
            want("unshare=0");
            if cfg!(target_arch = "x86_64") {
                want("io_uring=0");
            }
        }
    }
    // And the written profile says so: nothing allows io_uring.
    let confined = c
        .run_container(
            &pod,
            &pod_cfg,
            config("confined-spec", profile(ProfileType::RuntimeDefault, "")),
        )
        .await;
    assert_eq!(main_status(&mut c, &confined, "Seccomp").await, "2");
    let spec = runtime_spec(&mut c, &confined).await;
    let seccomp = &spec["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
    let rules = seccomp["syscalls"].as_array().unwrap();
    for name in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(
            !rules
                .iter()
                .any(|r| r["names"].as_array().unwrap().iter().any(|n| n == name)
                    && r["action"] == "SCMP_ACT_ALLOW"),
            "{name} allowed"
        );
    }
}

/// ExecSync processes (kubectl exec, probes) must run under the
/// container's seccomp profile, as runc's exec does.
#[tokio::test]
async fn exec_processes_get_the_containers_seccomp_profile() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "execseccomp");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(&pod, &pod_cfg, sleeper("main", Default::default()))
        .await;
    assert_eq!(main_status(&mut c, &id, "Seccomp").await, "2");
    assert_eq!(proc_status(&mut c, &id, "Seccomp").await, "2");
    let userns = sh(&mut c, &id, "unshare -U true").await;
    assert_ne!(userns.code, 0, "{userns:?}");
}

#[tokio::test]
async fn localhost_seccomp_profiles() {
    use cri::security_profile::ProfileType;
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let profiles = host_dir(&crustd, "profiles");
    let no_mkdir = profiles.join("no-mkdir.json");
    std::fs::write(
        &no_mkdir,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        }"#,
    )
    .unwrap();
    let no_mkdir = no_mkdir.display().to_string();
    // The pod's profile is the default for its containers.
    let mut pod_cfg = k8s_pod(&crustd, "localhost");
    pod_sc(&mut pod_cfg).seccomp = profile(ProfileType::Localhost, &no_mkdir);
    let pod = c.run_pod(&pod_cfg).await;
    let sc = |p| cri::LinuxContainerSecurityContext {
        seccomp: p,
        ..Default::default()
    };
    let script = "mkdir /tmp/x; echo mkdir=$?; touch /tmp/y; echo touch=$?";
    for (name, p, blocked) in [
        ("local", profile(ProfileType::Localhost, &no_mkdir), true),
        ("inherited", None, true),
        ("unconfined", profile(ProfileType::Unconfined, ""), false),
    ] {
        let (_, out) = run_script(&mut c, &pod, &pod_cfg, sleeper(name, sc(p)), script).await;
        // Everything else is allowed by this profile.
        assert!(out.lines().any(|l| l == "touch=0"), "{name}:\n{out}");
        if blocked {
            assert!(out.lines().any(|l| l == "mkdir=1"), "{name}:\n{out}");
            assert!(
                out.contains("Operation not permitted"),
                "EPERM: {name}:\n{out}"
            );
        } else {
            assert!(out.lines().any(|l| l == "mkdir=0"), "{name}:\n{out}");
        }
    }

    // A missing file, a relative path and invalid JSON fail CreateContainer.
    let missing = profiles.join("missing.json").display().to_string();
    create_fails(
        &mut c,
        &pod,
        &pod_cfg,
        sleeper("missing", sc(profile(ProfileType::Localhost, &missing))),
        &[&missing, "cannot open"],
    )
    .await;
    create_fails(
        &mut c,
        &pod,
        &pod_cfg,
        sleeper(
            "relative",
            sc(profile(ProfileType::Localhost, "profiles/x.json")),
        ),
        &["profiles/x.json", "absolute"],
    )
    .await;
    for (name, body, why) in [
        ("garbage", "{not json", "invalid profile JSON"),
        ("noaction", r#"{"syscalls": []}"#, "defaultAction"),
        (
            "badaction",
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOPE"}]}"#,
            "invalid profile JSON",
        ),
    ] {
        let path = profiles.join(format!("{name}.json"));
        std::fs::write(&path, body).unwrap();
        let path = path.display().to_string();
        create_fails(
            &mut c,
            &pod,
            &pod_cfg,
            sleeper(name, sc(profile(ProfileType::Localhost, &path))),
            &[&path, why],
        )
        .await;
    }
}

// ---------------------------------------------------------------------
// Sysctls

#[tokio::test]
async fn unsafe_sysctls_are_refused_safe_ones_are_set() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let host_shm_rmid = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let host_port_start =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let mut pod_cfg = k8s_pod(&crustd, "sysctls");
    pod_cfg.linux.as_mut().unwrap().sysctls = [
        ("net.ipv4.ip_unprivileged_port_start", "0"),
        ("kernel.shm_rmid_forced", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "main",
                cri::LinuxContainerSecurityContext {
                    run_as_user: uid(1000),
                    ..Default::default()
                },
            ),
        )
        .await;
    let r = sh(
        &mut c,
        &id,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced",
    )
    .await;
    assert_eq!(r.stdout, "0\n1", "{r:?}");
    // The sysctl does what it says: uid 1000 binds port 80.
    let bind80 = sh(
        &mut c,
        &id,
        "nc -l -p 80 </dev/null >/dev/null 2>/tmp/nc.err & sleep 0.5; \
         netstat -ltn; cat /tmp/nc.err; kill $!",
    )
    .await;
    assert!(bind80.stdout.contains(":80 "), "{bind80:?}");
    // The host is untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_shm_rmid
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host_port_start
    );

    // Not namespaced (kernel.panic would change the node), or a value
    // smuggling a second sysctl (CVE-2022-0811): refused at RunPodSandbox
    // or, at the latest, CreateContainer.
    for (i, (name, value)) in [
        ("kernel.panic", "1"),
        ("vm.overcommit_memory", "1"),
        (
            "kernel.shm_rmid_forced",
            "1\nkernel.core_pattern=|/bin/evil",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut bad_cfg = k8s_pod(&crustd, &format!("badsysctl{i}"));
        bad_cfg
            .linux
            .as_mut()
            .unwrap()
            .sysctls
            .insert(name.to_string(), value.to_string());
        let err = match c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(bad_cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
        {
            Err(e) => e,
            Ok(r) => {
                let bad_pod = r.into_inner().pod_sandbox_id;
                c.create_container(&bad_pod, &bad_cfg, sleeper("main", Default::default()))
                    .await
                    .expect_err("a container with an unsafe pod sysctl must not be created")
            }
        };
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(name), "{name}: {err:?}");
    }
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    assert!(!core_pattern.contains("evil"));
}

// ---------------------------------------------------------------------
// Annotations

#[tokio::test]
async fn annotations_cannot_loosen_anything() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let hostile: std::collections::HashMap<String, String> = [
        ("seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
        (
            "container.seccomp.security.alpha.kubernetes.io/main",
            "unconfined",
        ),
        (
            "container.apparmor.security.beta.kubernetes.io/main",
            "unconfined",
        ),
        ("io.kubernetes.cri.container-type", "sandbox"),
        ("io.kubernetes.cri.privileged", "true"),
        ("io.kubernetes.cri-o.Devices", "/dev/kmsg:/dev/kmsg:rwm"),
        ("io.kubernetes.cri-o.userns-mode", "auto"),
        ("io.kubernetes.cri-o.UnifiedCgroup.main", "memory.max=max"),
        ("io.containerd.runc.v2.group", "host"),
        ("org.systemd.property.DeviceAllow", "'/dev/kmsg rwm'"),
        ("org.systemd.property.MemoryMax", "infinity"),
        ("run.oci.keep_original_groups", "1"),
        ("run.oci.seccomp_fail_unknown_syscall", "0"),
        ("cpu-quota.crio.io", "disable"),
        ("privileged", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut pod_cfg = k8s_pod(&crustd, "annotated");
    pod_cfg.annotations = hostile.clone();
    let pod = c.run_pod(&pod_cfg).await;
    let limited = |name: &str| {
        let mut config = sleeper(name, Default::default());
        config.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        });
        config
    };
    // The same probes as each container's own process, all on stdout: the
    // order of stdout and stderr lines in a log is not deterministic.
    let script = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; \
                  readlink /proc/self/ns/user; ls /dev; \
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; \
                  id; unshare -U true 2>&1; echo unshare=$?";
    let (_, want) = run_script(&mut c, &pod, &pod_cfg, limited("plain"), script).await;
    let mut config = limited("main");
    config.annotations = hostile;
    let (_, got) = run_script(&mut c, &pod, &pod_cfg, config, script).await;
    assert_eq!(got, want, "annotations changed what the container can do");
    assert!(got.contains("Seccomp:\t2"), "{got}");
    assert!(got.contains("CapEff:\t00000000a80425fb"), "{got}");
    assert!(got.contains("unshare=1") && !got.contains("kmsg"), "{got}");
    assert!(got.contains(&(64u64 << 20).to_string()), "{got}");
    let host_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
    assert!(
        got.contains(host_userns.to_str().unwrap()),
        "no user namespace appeared: {got}"
    );
    // The written specs differ only in crust's own annotations.
    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    let id_of = |name: &str| {
        listed
            .iter()
            .find(|c| c.metadata.as_ref().unwrap().name == name)
            .unwrap()
            .id
            .clone()
    };
    let spec = runtime_spec(&mut c, &id_of("main")).await;
    let plain_spec = runtime_spec(&mut c, &id_of("plain")).await;
    let ann = spec["annotations"].as_object().unwrap();
    for k in ann.keys() {
        for reserved in [
            "org.systemd.property.",
            "run.oci.",
            "io.kubernetes.cri-o.",
            "io.containerd.",
        ] {
            assert!(!k.starts_with(reserved), "{k} reached the runtime");
        }
    }
    assert_eq!(ann["io.kubernetes.cri.container-type"], "container");
    assert!(!ann.contains_key("io.kubernetes.cri.privileged"));
    for key in [
        "seccomp",
        "maskedPaths",
        "readonlyPaths",
        "devices",
        "namespaces",
        "sysctl",
    ] {
        assert_eq!(spec["linux"][key], plain_spec["linux"][key], "linux.{key}");
    }
    assert_eq!(spec["linux"]["resources"], plain_spec["linux"]["resources"]);
    assert_eq!(spec["mounts"], plain_spec["mounts"]);
}

// ---------------------------------------------------------------------
// Namespaces, mounts and what Status reports

#[tokio::test]
async fn target_pid_namespace_shows_the_other_container() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = k8s_pod(&crustd, "target");
    let pod = c.run_pod(&pod_cfg).await;
    let target = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("app", &image_ref(BUSYBOX), &["sleep", "1111"]),
        )
        .await;
    let debug = c
        .run_container(
            &pod,
            &pod_cfg,
            sleeper(
                "debug",
                cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: cri::NamespaceMode::Target as i32,
                        target_id: target.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        )
        .await;
    let ps = sh(&mut c, &debug, "ps -o pid,args").await;
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.trim().starts_with("1 sleep 1111")),
        "the target's init is PID 1 here: {ps:?}"
    );
    assert!(ps.stdout.contains("sleep 3600"), "{ps:?}");
    let same = sh(&mut c, &target, "readlink /proc/self/ns/pid").await;
    let joined = sh(&mut c, &debug, "readlink /proc/self/ns/pid").await;
    assert_eq!(same.stdout, joined.stdout);
}

#[tokio::test]
async fn status_reports_the_security_features() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let s = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(s.features.unwrap().supplemental_groups_policy);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.split(|c: char| !c.is_ascii_digit());
    let kernel: (u32, u32) = (
        v.next().unwrap().parse().unwrap(),
        v.next().unwrap().parse().unwrap(),
    );
    for h in &s.runtime_handlers {
        let f = h.features.unwrap();
        // crust's probe: an overlay over detached idmapped layers (6.15+).
        assert_eq!(f.user_namespaces, kernel >= (6, 15), "{h:?}");
        assert_eq!(f.recursive_read_only_mounts, kernel >= (5, 12), "{h:?}");
    }
}

#[tokio::test]
async fn recursive_read_only_mounts_cover_submounts() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    // A host dir with a writable tmpfs mounted inside it.
    let dir = host_dir(&crustd, "rro");
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m,mode=0777"),
    )
    .unwrap();
    let pod_cfg = k8s_pod(&crustd, "rro");
    let pod = c.run_pod(&pod_cfg).await;
    let config = |name: &str, recursive: bool| {
        let mut config = sleeper(name, Default::default());
        config.mounts = vec![cri::Mount {
            recursive_read_only: recursive,
            ..bind("/data", &dir, true)
        }];
        config
    };
    let ro = c.run_container(&pod, &pod_cfg, config("ro", false)).await;
    let w = sh(&mut c, &ro, "echo x > /data/top").await;
    assert!(w.stderr.contains("Read-only file system"), "{w:?}");
    // Plain read-only leaves the submount writable: why RRO exists.
    let w = sh(&mut c, &ro, "echo x > /data/sub/file && echo ok").await;
    assert_eq!(w.stdout, "ok", "{w:?}");
    let rro = c.run_container(&pod, &pod_cfg, config("rro", true)).await;
    for path in ["/data/top", "/data/sub/file2"] {
        let w = sh(&mut c, &rro, &format!("echo x > {path}")).await;
        assert_ne!(w.code, 0, "{path}: {w:?}");
        assert!(w.stderr.contains("Read-only file system"), "{path}: {w:?}");
    }
    assert_eq!(sh(&mut c, &rro, "cat /data/sub/file").await.stdout, "x");
    // RRO needs readonly.
    let mut bad = config("bad", true);
    bad.mounts[0].readonly = false;
    create_fails(&mut c, &pod, &pod_cfg, bad, &["recursive_read_only"]).await;
}

#[tokio::test]
async fn a_missing_host_path_is_made_a_directory_as_containerd_does() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let missing = host_dir(&crustd, "hostpaths").join("made/by/crust");
    assert!(!missing.exists());
    let pod_cfg = k8s_pod(&crustd, "hostpaths");
    let pod = c.run_pod(&pod_cfg).await;
    let mut config = sleeper("writer", Default::default());
    config.mounts = vec![bind("/data", &missing, false)];
    let id = c.run_container(&pod, &pod_cfg, config).await;
    assert_eq!(
        sh(&mut c, &id, "echo hi > /data/f && echo ok").await.stdout,
        "ok"
    );
    assert_eq!(std::fs::read_to_string(missing.join("f")).unwrap(), "hi\n");
    let mode = std::fs::metadata(&missing).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    // A relative or `..` path is still refused, never created.
    let mut bad = sleeper("bad", Default::default());
    bad.mounts = vec![cri::Mount {
        host_path: format!("{}/../escape", missing.display()),
        ..bind("/data", &missing, false)
    }];
    let _ = c.create_container(&pod, &pod_cfg, bad).await;
    assert!(!missing.parent().unwrap().join("escape").exists());
}

#[tokio::test]
async fn mount_options_tighten_a_bind_and_loosening_ones_are_refused() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let s = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(s.features.unwrap().mount_options, "Status features");
    let dir = host_dir(&crustd, "mountopts");
    let script = dir.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pod_cfg = k8s_pod(&crustd, "mountopts");
    let pod = c.run_pod(&pod_cfg).await;
    let mut config = sleeper("opts", Default::default());
    config.mounts = vec![
        bind("/plain", &dir, false),
        cri::Mount {
            mount_options: ["noexec", "nosuid", "nodev", "noatime"]
                .map(String::from)
                .into(),
            ..bind("/tight", &dir, false)
        },
    ];
    let id = c.run_container(&pod, &pod_cfg, config).await;
    let options =
        |path: &str| format!("awk '$5 == \"{path}\" {{ print $6 }}' /proc/self/mountinfo");
    let tight = sh(&mut c, &id, &options("/tight")).await.stdout;
    let tight: Vec<&str> = tight.split(',').collect();
    for want in ["rw", "noexec", "nosuid", "nodev", "noatime"] {
        assert!(tight.contains(&want), "/tight: {tight:?}");
    }
    let plain = sh(&mut c, &id, &options("/plain")).await.stdout;
    assert!(!plain.split(',').any(|o| o == "noexec"), "/plain: {plain}");
    assert_eq!(sh(&mut c, &id, "/plain/run.sh").await.stdout, "ran");
    let run = sh(&mut c, &id, "/tight/run.sh").await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("Permission denied"), "{run:?}");
    // Still writable: the options only take away what they name.
    assert_eq!(
        sh(&mut c, &id, "echo x > /tight/w && echo ok").await.stdout,
        "ok"
    );
    // "ro" makes the bind read-only.
    let mut ro = sleeper("ro", Default::default());
    ro.mounts = vec![cri::Mount {
        mount_options: vec!["ro".into()],
        ..bind("/data", &dir, false)
    }];
    let ro = c.run_container(&pod, &pod_cfg, ro).await;
    let w = sh(&mut c, &ro, "echo x > /data/w2").await;
    assert!(w.stderr.contains("Read-only file system"), "{w:?}");
    // An option that would loosen what crust sets is InvalidArgument.
    for loosen in ["suid", "dev", "exec", "rw"] {
        let mut bad = sleeper("bad", Default::default());
        bad.mounts = vec![cri::Mount {
            mount_options: vec![loosen.into()],
            ..bind("/data", &dir, true)
        }];
        create_fails(&mut c, &pod, &pod_cfg, bad, &["mount_options", loosen]).await;
    }
}

// ---------------------------------------------------------------------
// User namespaces (hostUsers: false)

fn id_map(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

/// A pod as kubelet sends one with hostUsers: false.
fn userns_pod(
    crustd: &Crustd,
    name: &str,
    pid: cri::NamespaceMode,
    uids: Vec<cri::IdMapping>,
    gids: Vec<cri::IdMapping>,
) -> cri::PodSandboxConfig {
    let mut pod = pod_config(crustd, name);
    crust_e2e::set_pod_namespaces(
        &mut pod,
        cri::NamespaceOption {
            pid: pid as i32,
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids,
                gids,
            }),
            ..Default::default()
        },
    );
    pod
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (md.uid(), md.gid())
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

#[tokio::test]
async fn host_users_false_maps_the_pods_root_to_an_unprivileged_host_range() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let maps = || vec![id_map(0, 200000, 65536)];
    let mut pod_cfg = userns_pod(
        &crustd,
        "userns",
        cri::NamespaceMode::Container,
        maps(),
        maps(),
    );
    // A namespaced sysctl is set from inside the pod's user namespace: it
    // works only because the pod's network namespace belongs to it.
    pod_cfg.linux.as_mut().unwrap().sysctls = [(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "42".to_string(),
    )]
    .into();

    // A userns pod's root must pass through every dir above crust's state
    // dir (as it can through /run): a 0700 one is refused, naming it.
    let above = crustd.dir.path();
    std::fs::set_permissions(above, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a 0700 dir above the state dir");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&above.display().to_string()),
        "{err:?}"
    );
    std::fs::set_permissions(above, std::fs::Permissions::from_mode(0o711)).unwrap();

    let pod = c.run_pod(&pod_cfg).await;
    let info = c.pod_info(&pod).await;
    let userns_path = PathBuf::from(info["userNamespacePath"].as_str().unwrap());
    assert!(userns_path.exists(), "{info}");
    // A host dir only host root may enter, and a file only it may read.
    let secret_dir = host_dir(&crustd, "host-root-only");
    std::fs::write(secret_dir.join("secret"), "s3cret").unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut config = sleeper(
        "main",
        cri::LinuxContainerSecurityContext {
            capabilities: caps(&["NET_ADMIN"], &[]),
            ..Default::default()
        },
    );
    config.mounts = vec![bind("/host-secret", &secret_dir, false)];
    let id = c.run_container(&pod, &pod_cfg, config).await;

    assert_eq!(sh(&mut c, &id, "id -u; id -g").await.stdout, "0\n0");
    let maps_inside = sh(&mut c, &id, "cat /proc/self/uid_map /proc/self/gid_map").await;
    assert_eq!(
        words(&maps_inside.stdout),
        ["0", "200000", "65536", "0", "200000", "65536"],
        "{maps_inside:?}"
    );
    let pid = verbose_info(&mut c, &id).await["pid"].as_u64().unwrap();
    let host_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(words(&host_map), ["0", "200000", "65536"]);
    {
        use std::os::unix::fs::MetadataExt;
        let pinned = std::fs::metadata(&userns_path).unwrap();
        let joined = std::fs::metadata(format!("/proc/{pid}/ns/user")).unwrap();
        assert_eq!(
            (pinned.dev(), pinned.ino()),
            (joined.dev(), joined.ino()),
            "the container joined the pod's user namespace"
        );
    }
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap(),
        "the container is not in the host's user namespace"
    );

    // The image's files, owned by host root on disk, are root's inside.
    let image_owner = sh(&mut c, &id, "stat -c '%u:%g' /bin/busybox /etc/passwd /").await;
    assert_eq!(
        words(&image_owner.stdout),
        ["0:0", "0:0", "0:0"],
        "{image_owner:?}"
    );
    // What root creates in the rootfs is host uid 200000's.
    let w = sh(
        &mut c,
        &id,
        "echo hi > /created && mkdir -p /tmp && echo x > /tmp/t && chown 1000:1000 /tmp/t && \
         echo more >> /etc/passwd && echo ok",
    )
    .await;
    assert_eq!(w.stdout, "ok", "{w:?}");
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    assert_eq!(owner(&root.join("created")), (200000, 200000));
    assert_eq!(owner(&root.join("tmp/t")), (201000, 201000));
    let upper = crustd.root().join("snapshots/rw").join(&id).join("upper");
    assert_eq!(owner(&upper.join("created")), (200000, 200000));
    assert_eq!(
        owner(&upper),
        (200000, 200000),
        "the container's / is its root's"
    );
    // Copied up on write, with the mapped owner; the layer is untouched.
    assert_eq!(owner(&upper.join("etc/passwd")), (200000, 200000));

    // Root in the pod is no root on the host: it cannot make device
    // nodes (CAP_MKNOD counts only in the host's user namespace), enter a
    // dir only host root may, or read a file only host root may.
    let host_things = sh(
        &mut c,
        &id,
        "mknod /tmp/sda b 8 0; echo mknod=$?; ls /host-secret; echo ls=$?; \
         cat /host-secret/secret; echo cat=$?",
    )
    .await;
    let out = format!("{}\n{}", host_things.stdout, host_things.stderr);
    assert!(out.contains("mknod=1") && out.contains("ls=1"), "{out}");
    assert!(out.contains("cat=1") && !out.contains("s3cret"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");

    // The pod's own namespaces are the pod's: its sysctl was set from
    // inside, and root with NET_ADMIN administers the pod's network (both
    // need the network namespace to belong to the pod's user namespace).
    let ns = sh(
        &mut c,
        &id,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; hostname; \
         ip link add crust0 type bridge && ip link set lo mtu 1400 && echo netadmin",
    )
    .await;
    assert_eq!(words(&ns.stdout), ["42", "userns", "netadmin"], "{ns:?}");

    // The pod's files and /dev/shm are there and root's.
    let files = sh(
        &mut c,
        &id,
        "cat /etc/hostname; grep -c localhost /etc/hosts >/dev/null && echo hosts; \
         test -r /etc/resolv.conf && echo resolv; echo '# pod' >> /etc/hosts && echo hosts-w; \
         echo x > /dev/shm/f && stat -c '%u' /dev/shm/f",
    )
    .await;
    assert_eq!(
        words(&files.stdout),
        ["userns", "hosts", "resolv", "hosts-w", "0"],
        "{files:?}"
    );

    // Removing the pod leaves no pinned namespace behind.
    c.remove_pod(&pod).await;
    assert!(!userns_path.exists());
}

#[tokio::test]
async fn host_users_false_with_a_shared_pid_namespace() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let maps = || vec![id_map(0, 300000, 65536)];
    let pod_cfg = userns_pod(
        &crustd,
        "userns-pid",
        cri::NamespaceMode::Pod,
        maps(),
        maps(),
    );
    let pod = c.run_pod(&pod_cfg).await;
    let a = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("a", &image_ref(BUSYBOX), &["sleep", "2222"]),
        )
        .await;
    let b = c
        .run_container(&pod, &pod_cfg, sleeper("b", Default::default()))
        .await;
    let ps = sh(&mut c, &b, "ps -o pid,user,args").await;
    assert!(ps.stdout.contains("sleep 2222"), "{ps:?}");
    // PID 1 is crust's pod init, running as the pod's root, not host root.
    let init_pid = c.pod_info(&pod).await["podInitPid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{init_pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(words(uid_line)[1..], ["300000"; 4], "{uid_line}");
    // And it cannot be ptraced from inside the pod (it is undumpable).
    let same = sh(&mut c, &a, "readlink /proc/self/ns/pid /proc/self/ns/user").await;
    let other = sh(&mut c, &b, "readlink /proc/self/ns/pid /proc/self/ns/user").await;
    assert_eq!(same.stdout, other.stdout);
    let one = sh(&mut c, &b, "cat /proc/1/environ >/dev/null; echo $?").await;
    assert_eq!(one.stdout, "1", "{one:?}");
    c.remove_pod(&pod).await;
}

#[tokio::test]
async fn host_users_false_with_bad_mappings_fails_run_pod_sandbox() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let good = || vec![id_map(0, 200000, 65536)];
    for (uids, gids, words) in [
        (vec![], good(), "needs uid and gid mappings"),
        (good(), vec![], "needs uid and gid mappings"),
        (vec![id_map(0, 200000, 0)], good(), "length must be over 0"),
        (
            good(),
            vec![id_map(1, 200000, 65536)],
            "container id 0 must be mapped",
        ),
        (vec![id_map(0, 0, 65536)], good(), "host id 0"),
        (
            vec![id_map(0, 4294967000, 65536)],
            good(),
            "past the largest id",
        ),
        (
            vec![id_map(0, 200000, 100), id_map(100, 200050, 10)],
            good(),
            "overlaps",
        ),
    ] {
        let pod_cfg = userns_pod(&crustd, "bad", cri::NamespaceMode::Container, uids, gids);
        let err = c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_cfg),
                runtime_handler: String::new(),
            })
            .await
            .expect_err("bad mappings");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(words) && err.message().contains("userns_options"),
            "{words:?}: {err:?}"
        );
    }
    // hostUsers: false does not go with the host's network.
    let mut pod_cfg = userns_pod(
        &crustd,
        "bad",
        cri::NamespaceMode::Container,
        good(),
        good(),
    );
    pod_sc(&mut pod_cfg)
        .namespace_options
        .as_mut()
        .unwrap()
        .network = cri::NamespaceMode::Node as i32;
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("host network");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let pods = c.list_pods().await;
    assert!(pods.is_empty(), "{pods:?}");
    let left = std::fs::read_dir(crustd.state().join("pods"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "nothing is left of the refused pods");
}

#[tokio::test]
async fn host_users_false_volumes_are_idmapped() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let maps = || vec![id_map(0, 200000, 65536)];
    let pod_cfg = userns_pod(
        &crustd,
        "userns-vol",
        cri::NamespaceMode::Container,
        maps(),
        maps(),
    );
    let pod = c.run_pod(&pod_cfg).await;
    // A volume as kubelet makes them: files of host root's.
    let vol = host_dir(&crustd, "volume");
    std::fs::write(vol.join("config"), "v1\n").unwrap();
    let mut config = sleeper("main", Default::default());
    config.mounts = vec![
        cri::Mount {
            uid_mappings: maps(),
            gid_mappings: maps(),
            ..bind("/vol", &vol, false)
        },
        // The same dir without mappings, for contrast.
        bind("/plain", &vol, false),
    ];
    let id = c.run_container(&pod, &pod_cfg, config).await;
    let owners = sh(
        &mut c,
        &id,
        "stat -c '%u:%g' /vol /vol/config /plain/config",
    )
    .await;
    assert_eq!(
        words(&owners.stdout),
        ["0:0", "0:0", "65534:65534"],
        "{owners:?}"
    );
    let w = sh(
        &mut c,
        &id,
        "echo v2 > /vol/config && touch /vol/new && echo ok; echo x > /plain/config",
    )
    .await;
    assert_eq!(w.stdout, "ok", "{w:?}");
    assert!(w.stderr.contains("Permission denied"), "{w:?}");
    // Through the idmapped mount the pod's root is the volume's owner.
    assert_eq!(std::fs::read_to_string(vol.join("config")).unwrap(), "v2\n");
    assert_eq!(owner(&vol.join("new")), (0, 0));
    let copies = crustd.state().join("idmapped").join(&id);
    assert!(copies.exists());
    c.remove_pod(&pod).await;
    assert!(
        !copies.exists(),
        "the idmapped copies go with the container"
    );
    assert_eq!(std::fs::read_to_string(vol.join("config")).unwrap(), "v2\n");
}

#[tokio::test]
async fn host_pid_and_ipc_namespaces_are_the_hosts() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let mut pod_cfg = pod_config(&crustd, "hostns");
    crust_e2e::set_pod_namespaces(
        &mut pod_cfg,
        cri::NamespaceOption {
            pid: cri::NamespaceMode::Node as i32,
            ipc: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    );
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(&pod, &pod_cfg, sleeper("main", Default::default()))
        .await;
    for ns in ["pid", "ipc"] {
        let inside = sh(&mut c, &id, &format!("readlink /proc/self/ns/{ns}")).await;
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_eq!(inside.stdout, host.to_str().unwrap(), "{ns}");
    }
    // The host's processes are visible: this test's own pid among them.
    let me = std::process::id();
    let seen = sh(&mut c, &id, &format!("test -d /proc/{me} && echo visible")).await;
    assert_eq!(seen.stdout, "visible");

    // Without the options the container has its own.
    let own_cfg = k8s_pod(&crustd, "ownns");
    let own = c.run_pod(&own_cfg).await;
    let id = c
        .run_container(&own, &own_cfg, sleeper("main", Default::default()))
        .await;
    for ns in ["pid", "ipc"] {
        let inside = sh(&mut c, &id, &format!("readlink /proc/self/ns/{ns}")).await;
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(inside.stdout, host.to_str().unwrap(), "{ns}");
    }
}

#[tokio::test]
async fn mount_propagation_modes_are_honoured() {
    use nix::mount::{MsFlags, mount};
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    // A shared host mount, as kubelet's pod volume dirs are.
    let dir = crustd.root().parent().unwrap().join("propagation");
    std::fs::create_dir_all(&dir).unwrap();
    mount(
        Some(&dir),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    let volume = |propagation: cri::MountPropagation| cri::Mount {
        container_path: "/vol".into(),
        host_path: dir.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    };
    let pod_cfg = privileged_pod(&crustd, "propagation");
    let pod = c.run_pod(&pod_cfg).await;
    let mut run = async |name: &str, propagation, privileged| {
        let mut config = sleeper(
            name,
            cri::LinuxContainerSecurityContext {
                privileged,
                ..Default::default()
            },
        );
        config.mounts = vec![volume(propagation)];
        c.run_container(&pod, &pod_cfg, config).await
    };
    let private = run("private", cri::MountPropagation::PropagationPrivate, false).await;
    let slave = run(
        "slave",
        cri::MountPropagation::PropagationHostToContainer,
        false,
    )
    .await;
    let shared = run(
        "shared",
        cri::MountPropagation::PropagationBidirectional,
        true,
    )
    .await;

    // A mount made on the host after the containers started.
    let from_host = dir.join("from-host");
    std::fs::create_dir_all(&from_host).unwrap();
    mount(
        Some("tmpfs"),
        &from_host,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(from_host.join("mark"), "host").unwrap();
    let sees = async |c: &mut CriClient, id: &str, path: &str| {
        sh(c, id, &format!("cat {path} 2>/dev/null || echo none"))
            .await
            .stdout
    };
    assert_eq!(sees(&mut c, &slave, "/vol/from-host/mark").await, "host");
    assert_eq!(sees(&mut c, &shared, "/vol/from-host/mark").await, "host");
    assert_eq!(sees(&mut c, &private, "/vol/from-host/mark").await, "none");

    // A mount made in the bidirectional container reaches the host.
    let made = sh(
        &mut c,
        &shared,
        "mkdir -p /vol/from-ctr && mount -t tmpfs tmpfs /vol/from-ctr && echo ctr > /vol/from-ctr/mark",
    )
    .await;
    assert_eq!(made.code, 0, "{made:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("from-ctr/mark")).unwrap_or_default(),
        "ctr\n"
    );
    assert_eq!(sees(&mut c, &slave, "/vol/from-ctr/mark").await, "ctr");

    // Bidirectional needs a privileged container.
    let mut config = sleeper("unprivileged-shared", Default::default());
    config.mounts = vec![volume(cri::MountPropagation::PropagationBidirectional)];
    let err = c
        .create_container(&pod, &pod_cfg, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

// ---------------------------------------------------------------------
// The pod init (PID 1 of a shared-PID pod) is as confined as a pause
// container: every container of the pod sees it.

/// ptrace(PTRACE_ATTACH, pid): exit 0 when attached, else the errno.
fn ptrace_attach_program(pid: u32) -> Vec<u8> {
    let mut code = vec![0xbf, 16, 0, 0, 0]; // mov edi, PTRACE_ATTACH
    code.push(0xbe); // mov esi, pid
    code.extend(pid.to_le_bytes());
    code.extend([
        0x31, 0xd2, // xor edx, edx
        0x45, 0x31, 0xd2, // xor r10d, r10d
        0xb8, 101, 0, 0, 0, // mov eax, SYS_ptrace
        0x0f, 0x05, // syscall
    ]);
    code.extend(EXIT_WITH_ERRNO);
    tiny_elf(&code)
}

#[tokio::test]
async fn the_pod_init_gives_containers_nothing_of_the_host() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    // A host socket the pod must not see through /proc/1/net.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port_hex = format!(":{:04X}", listener.local_addr().unwrap().port());
    assert!(
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .contains(&port_hex),
        "the host lists its own listener"
    );
    // A marker in the host's / that a container must not reach.
    let marker = format!("crust-e2e-marker-{}", std::process::id());
    let marker_path = Path::new("/var/tmp").join(&marker);
    std::fs::write(&marker_path, "host").unwrap();

    let pod_cfg = pod_config(&crustd, "pod-init"); // CRI's default: PID namespace per pod
    let pod = c.run_pod(&pod_cfg).await;
    let tools = host_dir(&crustd, "pod-init-tools");
    let mut config = sleeper(
        "tracer",
        cri::LinuxContainerSecurityContext {
            capabilities: caps(&["SYS_PTRACE"], &[]),
            seccomp: profile(cri::security_profile::ProfileType::Unconfined, ""),
            ..Default::default()
        },
    );
    config.mounts.push(bind("/tools", &tools, true));
    let tracer = c.run_container(&pod, &pod_cfg, config).await;
    let plain = c
        .run_container(&pod, &pod_cfg, sleeper("plain", Default::default()))
        .await;

    // /proc/1 is the init's, not a host process's.
    let ps = sh(&mut c, &tracer, "cat /proc/1/status").await;
    let field = |name: &str| {
        ps.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {ps:?}"))
            .trim()
            .to_string()
    };
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(set), "0000000000000000", "{set} of PID 1");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2");
    assert_eq!(words(&field("Uid")), ["65535"; 4]);

    // Its root is an empty directory, even to a container with SYS_PTRACE.
    let root = sh(&mut c, &tracer, "ls -A /proc/1/root; echo end").await;
    assert_eq!(root.stdout, "end", "PID 1's root holds something: {root:?}");
    let reach = sh(
        &mut c,
        &tracer,
        &format!("cat /proc/1/root/var/tmp/{marker}"),
    )
    .await;
    assert_ne!(reach.code, 0, "a host file through /proc/1/root: {reach:?}");
    assert_ne!(reach.stdout, "host");
    // Its mount table is one tmpfs: no host path appears in it.
    for id in [&tracer, &plain] {
        let mounts = sh(&mut c, id, "cat /proc/1/mountinfo").await;
        let lines: Vec<&str> = mounts.stdout.lines().collect();
        assert!(lines.len() <= 1, "PID 1's mounts: {mounts:?}");
        for host_path in [
            crustd.root().display().to_string(),
            crustd.state().display().to_string(),
            "/sys/fs/cgroup".to_string(),
            "/var".to_string(),
        ] {
            assert!(
                !mounts.stdout.contains(&host_path),
                "{host_path} in PID 1's mounts: {mounts:?}"
            );
        }
        // Its network namespace is the pod's, not the host's.
        let tcp = sh(&mut c, id, "cat /proc/1/net/tcp /proc/1/net/tcp6").await;
        assert!(
            !tcp.stdout.contains(&port_hex),
            "the host's listener {port_hex} in PID 1's sockets: {tcp:?}"
        );
        // No descriptor of crustd's is open in it.
        let fds = sh(&mut c, id, "ls -A /proc/1/fd 2>/dev/null; echo end").await;
        assert_eq!(fds.stdout, "end", "PID 1 holds descriptors: {fds:?}");
    }

    // PTRACE_ATTACH to PID 1 fails with EPERM even with SYS_PTRACE, while
    // the same program attaches to a process of the container's own.
    let sibling = sh(&mut c, &tracer, "sleep 1000 >/dev/null 2>&1 & echo $!").await;
    let sibling: u32 = sibling.stdout.trim().parse().unwrap();
    write_program(&tools, "attach-1", &ptrace_attach_program(1), 0o755);
    write_program(
        &tools,
        "attach-sibling",
        &ptrace_attach_program(sibling),
        0o755,
    );
    let own = sh(&mut c, &tracer, "/tools/attach-sibling; echo $?").await;
    assert_eq!(own.stdout, "0", "ptrace works in the container: {own:?}");
    let one = sh(&mut c, &tracer, "/tools/attach-1; echo $?").await;
    assert_eq!(
        one.stdout, "1",
        "PTRACE_ATTACH to PID 1 must fail with EPERM: {one:?}"
    );

    // On the host: the init has a cgroup of its own in the pod's, and it
    // and its guard are gone with the pod, cgroup included.
    let init_pid = c.pod_info(&pod).await["podInitPid"].as_u64().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{init_pid}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find(|l| l.contains(":memory:") || l.starts_with("0::"))
        .unwrap_or_else(|| panic!("no memory cgroup: {cgroups}"));
    let parent = pod_cfg.linux.as_ref().unwrap().cgroup_parent.clone();
    assert!(
        memory.ends_with(&format!("{parent}/{pod}")),
        "the init's cgroup {memory} is not {parent}/{pod}"
    );
    let status = std::fs::read_to_string(format!("/proc/{init_pid}/status")).unwrap();
    let guard_pid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(guard_pid > 0, "the init is traced by its guard");
    c.remove_pod(&pod).await;
    for pid in [init_pid as u32, guard_pid] {
        let gone = (0..100).any(|_| {
            let alive = Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            if alive {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            !alive
        });
        assert!(gone, "process {pid} outlived its pod");
    }
    let cgroup_dir = Path::new("/sys/fs/cgroup/memory")
        .join(parent.trim_start_matches('/'))
        .join(&pod);
    let cgroup_dir = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup")
            .join(parent.trim_start_matches('/'))
            .join(&pod)
    } else {
        cgroup_dir
    };
    assert!(!cgroup_dir.exists(), "{} is left", cgroup_dir.display());
    let _ = std::fs::remove_file(&marker_path);
}

#[tokio::test]
async fn run_pod_sandbox_refuses_a_cgroup_parent_outside_the_hierarchy() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let escape = format!(
        "/../../../../../../../../var/tmp/crust-e2e-cgroup-{}",
        std::process::id()
    );
    let mut pod_cfg = pod_config(&crustd, "cgroup-escape");
    pod_cfg.linux.as_mut().unwrap().cgroup_parent = escape.clone();
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("RunPodSandbox must refuse the cgroup parent");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("cgroup_parent"), "{err:?}");
    let made = Path::new(&format!("/var/tmp/crust-e2e-cgroup-{}", std::process::id())).exists();
    assert!(
        !made,
        "RunPodSandbox made a directory outside the cgroup tree"
    );
}
