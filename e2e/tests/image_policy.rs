//! images.policy through the CRI socket: test images signed here as
//! cosign signs them (sigstore-rs keys; a simple-signing payload pushed as
//! a blob, the `sha256-<digest>.sig` manifest naming it with the
//! signature as its annotation), then pulled under a policy.

use crust_e2e::cosign::{copy_image, key, registry, sign};
use crust_e2e::{Crustd, CrustdOptions};

async fn pull(c: &mut crust_e2e::CriClient, image: &str) -> Result<String, tonic::Status> {
    c.pull(image).await
}

#[tokio::test]
async fn a_signed_by_scope_accepts_only_images_its_keys_signed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: e2e tests need root");
        return;
    }
    let keys_dir = tempfile::tempdir().unwrap();
    let team = key(keys_dir.path(), "team");
    let stranger = key(keys_dir.path(), "stranger");
    let reg = registry();
    // A run id keeps repositories of earlier runs out of the way.
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let repo = |name: &str| format!("policy-{run}/team/{name}");
    let signed = copy_image(&repo("signed"), "v1", "signed");
    sign(&repo("signed"), &signed, &team, false);
    copy_image(&repo("unsigned"), "v1", "unsigned");
    let other = copy_image(&repo("stranger"), "v1", "stranger");
    sign(&repo("stranger"), &other, &stranger, false);
    let tampered = copy_image(&repo("tampered"), "v1", "tampered");
    sign(&repo("tampered"), &tampered, &team, true);
    let open = copy_image(&format!("policy-{run}/team/open/app"), "v1", "open");
    let _ = open;
    copy_image(&format!("policy-{run}/rejected/app"), "v1", "rejected");

    let metrics_port = crust_e2e::free_port();
    let mut crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "metrics:\n  address: 127.0.0.1:{metrics_port}\nregistries:\n  mirrors:\n    policy.example: [http://{reg}]\nimages:\n  policy:\n    default: accept\n    scopes:\n      - {{scope: '{reg}/policy-{run}/team', rule: signed_by, keys: [{team}]}}\n      - {{scope: '{reg}/policy-{run}/team/open', rule: accept}}\n      - {{scope: '{reg}/policy-{run}/rejected', rule: reject}}\n      - {{scope: 'policy.example/policy-{run}/team', rule: signed_by, keys: [{team}]}}\n",
            team = team.public.display()
        ),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let refused = |r: Result<String, tonic::Status>, why: &str| {
        let e = r.expect_err(why);
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{why}: {e}");
        e.message().to_string()
    };

    // Signed by the scope's key: pulled.
    let id = pull(&mut c, &format!("{reg}/{}:v1", repo("signed")))
        .await
        .unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(
        crustd.log().contains("signature verified"),
        "{}",
        crustd.log()
    );
    // Unsigned, in the signed_by scope: refused, naming scope, rule, reason.
    let m = refused(
        pull(&mut c, &format!("{reg}/{}:v1", repo("unsigned"))).await,
        "unsigned",
    );
    assert!(
        m.contains(&format!("policy-{run}/team"))
            && m.contains("signed_by")
            && m.contains("no signature"),
        "{m}"
    );
    // Signed by another key, or a tampered payload: refused.
    let m = refused(
        pull(&mut c, &format!("{reg}/{}:v1", repo("stranger"))).await,
        "stranger",
    );
    assert!(m.contains("not by any key"), "{m}");
    let m = refused(
        pull(&mut c, &format!("{reg}/{}:v1", repo("tampered"))).await,
        "tampered",
    );
    assert!(m.contains("not by any key"), "{m}");
    // A more specific accept scope wins over its signed_by parent.
    pull(&mut c, &format!("{reg}/policy-{run}/team/open/app:v1"))
        .await
        .unwrap();
    // A reject scope refuses; outside every scope the default accepts.
    let m = refused(
        pull(&mut c, &format!("{reg}/policy-{run}/rejected/app:v1")).await,
        "rejected",
    );
    assert!(m.contains("reject"), "{m}");
    pull(&mut c, &crust_e2e::image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    // Another image, pulled while its repository needs no signature.
    let multilayer_ref = crust_e2e::image_ref("crust-test/multilayer:latest");
    let multilayer_id = pull(&mut c, &multilayer_ref).await.unwrap();
    // Through a mirror: the same verdicts, over the same digests.
    pull(&mut c, &format!("policy.example/{}:v1", repo("signed")))
        .await
        .unwrap();
    let m = refused(
        pull(&mut c, &format!("policy.example/{}:v1", repo("unsigned"))).await,
        "mirror unsigned",
    );
    assert!(m.contains("no signature"), "{m}");
    // A tag moved to an unsigned digest is refused on re-pull.
    copy_image(&repo("signed"), "v1", "moved");
    let m = refused(
        pull(&mut c, &format!("{reg}/{}:v1", repo("signed"))).await,
        "moved tag",
    );
    assert!(m.contains("no signature"), "{m}");
    // Refused images leave no image record.
    let images = c.list_images().await;
    assert!(
        !images.iter().any(|i| i
            .repo_tags
            .iter()
            .any(|t| t.contains("unsigned") || t.contains("rejected"))),
        "{images:?}"
    );
    // The log names the refused image and digest; metrics count both.
    assert!(
        crustd.log().contains("image refused by policy"),
        "{}",
        crustd.log()
    );
    let metrics = crust_e2e::http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains("crust_image_verifications_total{result=\"verified\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crust_image_verifications_total{result=\"refused\"}"),
        "{metrics}"
    );

    // A policy changed since the pull applies at CreateContainer, to what
    // the pull recorded: busybox (never verified) now needs a signature,
    // and the team image keeps its recorded verification.
    let busybox_ref = crust_e2e::image_ref("crust-test/busybox:latest");
    let config = std::fs::read_to_string(&crustd.config_path).unwrap();
    let stricter = config.replace(
        "    scopes:\n",
        &format!(
            "    scopes:\n      - {{scope: '{reg}/crust-test', rule: signed_by, keys: [{}]}}\n",
            team.public.display()
        ),
    );
    assert_ne!(stricter, config);
    std::fs::write(&crustd.config_path, &stricter).unwrap();
    crustd.stop_with(nix::sys::signal::Signal::SIGTERM);
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let pod_cfg = crust_e2e::pod_config(&crustd, "policy");
    let pod = c.run_pod(&pod_cfg).await;
    // As kubelet asks: the image ID, and the name the user gave.
    let as_kubelet = |name: &str, id: &str, name_given: &str| {
        let mut cfg = crust_e2e::container_config(name, id, &["true"]);
        cfg.image.as_mut().unwrap().user_specified_image = name_given.to_string();
        cfg
    };
    let busybox_id = c.image_status(&busybox_ref).await.unwrap().id;
    let e = c
        .create_container(
            &pod,
            &pod_cfg,
            as_kubelet("busybox", &busybox_id, &busybox_ref),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("pull it again"), "{e}");
    // Naming an accepted repository the image never came from vouches
    // for nothing: its own names decide.
    let e = c
        .create_container(
            &pod,
            &pod_cfg,
            as_kubelet("lying", &multilayer_id, &format!("{reg}/elsewhere/app:v1")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    // The signed digest, pulled by name under the team scope: admitted.
    let signed_digest_ref = format!("{reg}/{}@{signed}", repo("signed"));
    let signed_id = pull(&mut c, &signed_digest_ref).await.unwrap();
    c.create_container(
        &pod,
        &pod_cfg,
        as_kubelet("signed", &signed_id, &signed_digest_ref),
    )
    .await
    .unwrap();
    // An image volume (Mount.image) is held to the policy as well: the
    // multilayer image is no longer admitted, so neither is its mount.
    let mut with_volume = as_kubelet("with-volume", &signed_id, &signed_digest_ref);
    with_volume.mounts.push(crust_e2e::cri::Mount {
        container_path: "/vol".into(),
        readonly: true,
        image: Some(crust_e2e::cri::ImageSpec {
            image: multilayer_id.clone(),
            user_specified_image: multilayer_ref.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = c
        .create_container(&pod, &pod_cfg, with_volume)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    // With another key for the team scope, that recorded verification no
    // longer counts.
    let team_scope = format!(
        "{{scope: '{reg}/policy-{run}/team', rule: signed_by, keys: [{}]}}",
        team.public.display()
    );
    let other_keys = stricter.replace(
        &team_scope,
        &team_scope.replace(
            &team.public.display().to_string(),
            &stranger.public.display().to_string(),
        ),
    );
    assert_ne!(other_keys, stricter, "the team scope's key was replaced");
    std::fs::write(&crustd.config_path, &other_keys).unwrap();
    crustd.stop_with(nix::sys::signal::Signal::SIGTERM);
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let e = c
        .create_container(
            &pod,
            &pod_cfg,
            as_kubelet("signed2", &signed_id, &signed_digest_ref),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    // The scope's own key file replaced in place (same path, another
    // key): the recorded verification was by the old key, so no longer.
    std::fs::write(&crustd.config_path, &stricter).unwrap();
    std::fs::copy(&stranger.public, &team.public).unwrap();
    crustd.stop_with(nix::sys::signal::Signal::SIGTERM);
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let e = c
        .create_container(
            &pod,
            &pod_cfg,
            as_kubelet("signed3", &signed_id, &signed_digest_ref),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
}

#[tokio::test]
async fn a_bad_policy_stops_crustd_with_a_clear_message() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: e2e tests need root");
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let config = dir.path().join("config.yaml");
    let base = format!(
        "root: {d}/root\nstate: {d}/state\nsocket: {d}/state/crust.sock\nmetrics:\n  address: ''\n",
        d = dir.path().display()
    );
    // A shape error: config check names the scope.
    std::fs::write(
        &config,
        format!("{base}images:\n  policy:\n    scopes:\n      - {{scope: r.example/team, rule: signed_by}}\n"),
    )
    .unwrap();
    let (code, output) =
        crust_e2e::run_crustd(&["--config", config.to_str().unwrap(), "config", "check"]);
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("images.policy.scopes[0]") && output.contains("at least one key"),
        "{output}"
    );
    // A key that is no public key: crustd refuses to start, naming it.
    let key = dir.path().join("not-a-key.pub");
    std::fs::write(&key, "hello").unwrap();
    std::fs::write(
        &config,
        format!(
            "{base}images:\n  policy:\n    scopes:\n      - {{scope: r.example/team, rule: signed_by, keys: [{}]}}\n",
            key.display()
        ),
    )
    .unwrap();
    let (code, output) = crust_e2e::run_crustd(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("not-a-key.pub") && output.contains("not a public key"),
        "{output}"
    );
}
