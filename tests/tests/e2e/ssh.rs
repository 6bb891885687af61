//! The SSH provider against a real sshd: the broker as a process, an sshd
//! that trusts its resource's user CA (fetched from
//! `/v1/providers/ssh/ca.pub?resource=box`)
//! and reads the KRL the broker writes, and logins with the real `ssh`
//! client using a key made on the client and the certificate the broker
//! signed for it.

use std::path::PathBuf;
use std::time::Duration;

use hourglass_client::Client;
use hourglass_core::api::{ClientSecret, CreateRequest, Credential};
use hourglass_core::{Grant, GrantState, RequestState, RevocationStatus};
use hourglass_e2e::sshd::{Sshd, current_user, krl_revokes};
use hourglass_e2e::{DevBroker, Run, eventually, policy_dir};

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;

/// A broker with a `box` resource for the test sshd (`login` certifies the
/// current OS user, `other` a user that is not us), and that sshd.
struct Setup {
    broker: DevBroker,
    sshd: Sshd,
    user: String,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    _policy: tempfile::TempDir,
}

/// One grant as its owner's client holds it: the private key file (0600)
/// and the certificate file next to it.
struct Login {
    grant: Grant,
    key: PathBuf,
    cert: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let krl = dir.path().join("sshd/revoked.krl");
        let user = current_user();
        let toml = format!(
            r#"
[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "1h"
renewals_without_approval = 5
reason_required = false

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.box]
description = "the test sshd"
provider = "ssh"
settings = {{ krl_file = "{krl}" }}

[resources.box.roles.login]
settings = {{ principals = ["{user}"] }}

[resources.box.roles.other]
settings = {{ principals = ["hourglass-nobody"] }}

[resources.production]
description = "another resource's sshd, whose hosts have the same user"
provider = "ssh"
settings = {{ krl_file = "{krl}" }}

[resources.production.roles.login]
settings = {{ principals = ["{user}"] }}
"#,
            krl = krl.display()
        );
        let policy = policy_dir(&toml, CEDAR);
        let broker = DevBroker::start_with_policy(policy.path(), &[]);
        let sshd = Sshd::start(&resource_ca(&broker, "box"), &krl);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Setup { broker, sshd, user, dir, runtime, _policy: policy }
    }

    fn client(&self, who: &str) -> Client {
        self.broker.client(who)
    }

    fn krl(&self) -> PathBuf {
        self.dir.path().join("sshd/revoked.krl")
    }

    /// `who` asks for `box/ROLE` with a key made here; policy approves at
    /// once. Writes the private key and the certificate to files named `name`.
    fn grant(&self, who: &str, role: &str, duration: &str, name: &str) -> Login {
        self.grant_on("box", who, role, duration, name)
    }

    /// [`Setup::grant`] on `resource`.
    fn grant_on(&self, resource: &str, who: &str, role: &str, duration: &str, name: &str) -> Login {
        let secret = hourglass_client::material::ssh().expect("a client key");
        let key = self.dir.path().join(name);
        secret.private_key.write_openssh_file(&key, Default::default()).expect("private key file (0600)");
        let body = CreateRequest {
            resource: resource.into(),
            role: role.into(),
            duration: duration.into(),
            reason: "e2e".into(),
            ticket: None,
            break_glass: false,
            client_material: Some(secret.material.clone()),
        };
        let outcome = self
            .runtime
            .block_on(self.client(who).create_request(&body))
            .unwrap_or_else(|e| panic!("{who} requests {resource}/{role}: {e}"));
        assert_eq!(
            outcome.request.state,
            RequestState::Approved,
            "policy approves {resource}/{role} at once: {outcome:?}"
        );
        let grant = outcome.grant.expect("an approved request carries its grant");
        assert_eq!(grant.state, GrantState::Active, "issued on approval: {grant:?}");
        assert!(grant.ready_at.is_some(), "the broker confirms a certificate it signed works: {grant:?}");
        let cert = self.dir.path().join(format!("{name}-cert.pub"));
        let credential = self.credential(who, &grant);
        write_cert(&cert, &credential);
        Login { grant, key, cert }
    }

    fn credential(&self, who: &str, grant: &Grant) -> Credential {
        self.runtime
            .block_on(self.client(who).credential(&grant.id))
            .unwrap_or_else(|e| panic!("{who} fetches the credential of {}: {e}", grant.id))
    }

    fn ssh(&self, login: &Login) -> Run {
        self.sshd.ssh(&self.user, &login.key, &login.cert, "echo ok")
    }

    /// Logs in and checks the command ran.
    fn assert_logs_in(&self, login: &Login, why: &str) {
        let run = self.ssh(login);
        assert!(
            run.ok && run.stdout.trim() == "ok",
            "{why}: ssh failed: {}\n--- sshd log ---\n{}",
            run.stderr,
            self.sshd.log()
        );
    }

    /// Checks sshd refused the key (not that the connection failed).
    fn assert_refused(&self, login: &Login, why: &str) {
        let run = self.ssh(login);
        assert!(!run.ok, "{why}: ssh logged in");
        assert!(run.stderr.contains("Permission denied"), "{why}: refused at authentication: {}", run.stderr);
    }

    fn grant_now(&self, who: &str, grant: &Grant) -> Grant {
        self.runtime.block_on(self.client(who).grant(&grant.id)).unwrap_or_else(|e| panic!("reading {}: {e}", grant.id))
    }
}

/// The user CA of `resource`, as its hosts' sshd trusts it (`TrustedUserCAKeys`).
fn resource_ca(broker: &DevBroker, resource: &str) -> String {
    let (status, body) = broker.http("GET", &format!("/v1/providers/ssh/ca.pub?resource={resource}"), None, None);
    let ca = String::from_utf8(body).expect("ca.pub is text");
    assert_eq!(status, 200, "the broker serves {resource}'s SSH user CA: {ca}");
    assert!(ca.starts_with("ssh-ed25519 "), "an OpenSSH public key line for TrustedUserCAKeys: {ca}");
    ca
}

fn write_cert(path: &std::path::Path, credential: &Credential) {
    let cert = credential.ssh_certificate.as_deref().expect("an SSH credential carries the certificate");
    std::fs::write(path, format!("{cert}\n")).expect("certificate file");
}

#[test]
fn ssh_certificate_logs_in() {
    let setup = Setup::new();
    // Before any grant, the KRL file does not exist and sshd refuses every
    // key; the broker writes it before it hands out the first certificate.
    assert!(!setup.krl().exists(), "no KRL before the first certificate");
    let alice = setup.grant("alice", "login", "10m", "alice");
    assert!(setup.krl().exists(), "issuing wrote the resource's krl_file");
    setup.assert_logs_in(&alice, "a fresh certificate for the current user");

    let credential = setup.credential("alice", &alice.grant);
    assert_eq!(credential.provider, "ssh");
    assert_eq!(credential.client_secret, Some(ClientSecret::SshPrivateKey), "completed by the client's own key");
    assert!(
        credential.env.iter().any(|v| v.name == "BOX_SSH_USER" && v.value == setup.user && !v.secret),
        "the login name is exported: {:?}",
        credential.env.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    let cert = credential.ssh_certificate.clone().expect("certificate");
    assert!(cert.starts_with("ssh-ed25519-cert-v01@openssh.com "), "an OpenSSH certificate: {cert}");
    let key_id = format!("hourglass:{}:alice@acme.example", alice.grant.id);
    assert!(
        setup.sshd.log().lines().any(|line| line.starts_with("Accepted publickey") && line.contains(&key_id)),
        "sshd accepted the certificate by its key id {key_id}: {}",
        setup.sshd.log()
    );

    let (status, krl) = setup.broker.http("GET", "/v1/providers/ssh/krl", None, None);
    assert_eq!(status, 200, "the KRL is served");
    assert_eq!(krl, std::fs::read(setup.krl()).expect("KRL file"), "the served KRL is the one written");
    assert!(krl.starts_with(b"SSHKRL\n\0"), "an OpenSSH KRL");
}

#[test]
fn ssh_certificate_of_one_resource_is_refused_by_another_resources_sshd() {
    let setup = Setup::new();
    let (box_ca, production_ca) = (resource_ca(&setup.broker, "box"), resource_ca(&setup.broker, "production"));
    assert_ne!(box_ca, production_ca, "each resource has its own user CA");
    let (status, _) = setup.broker.http("GET", "/v1/providers/ssh/ca.pub?resource=nowhere", None, None);
    assert_eq!(status, 404, "no CA for a resource that is not there");

    // Both sshds have the same user; box's certificate names it.
    let staging = setup.grant("alice", "login", "10m", "staging");
    setup.assert_logs_in(&staging, "box's certificate logs in to box's sshd");
    let production = Sshd::start(&production_ca, &setup.krl());
    let run = production.ssh(&setup.user, &staging.key, &staging.cert, "echo ok");
    assert!(!run.ok, "box's certificate logged in to production's sshd");
    assert!(run.stderr.contains("Permission denied"), "refused at authentication: {}", run.stderr);
    let theirs = setup.grant_on("production", "alice", "login", "10m", "production");
    let run = production.ssh(&setup.user, &theirs.key, &theirs.cert, "echo ok");
    assert!(
        run.ok && run.stdout.trim() == "ok",
        "production's own certificate logs in: {}\n{}",
        run.stderr,
        production.log()
    );
}

#[test]
fn ssh_wrong_principal_refused() {
    let setup = Setup::new();
    let right = setup.grant("alice", "login", "10m", "right");
    let wrong = setup.grant("alice", "other", "10m", "wrong");
    setup.assert_logs_in(&right, "the same sshd lets the right principal in");
    setup.assert_refused(&wrong, "a certificate for hourglass-nobody does not log in as the current user");
    assert!(
        setup.sshd.log().contains("Certificate invalid: name is not a listed principal"),
        "sshd refused it for its principal: {}",
        setup.sshd.log()
    );
}

#[test]
fn ssh_expired_certificate_refused() {
    let setup = Setup::new();
    let alice = setup.grant("alice", "login", "8s", "alice");
    setup.assert_logs_in(&alice, "valid until the deadline");
    let refused = eventually(Duration::from_secs(40), || (!setup.ssh(&alice).ok).then_some(()));
    assert!(refused.is_some(), "the certificate stops working at the grant's deadline");
    setup.assert_refused(&alice, "past valid_before");
    assert!(
        setup.sshd.log().contains("Certificate invalid: expired"),
        "sshd refused it as expired: {}",
        setup.sshd.log()
    );
    let ended = eventually(Duration::from_secs(20), || {
        let grant = setup.grant_now("alice", &alice.grant);
        (grant.revocation.as_ref().is_some_and(|r| r.status == RevocationStatus::Done)).then_some(grant)
    })
    .expect("the broker expires the grant and completes its revocation");
    assert_eq!(ended.state, GrantState::Expired, "{ended:?}");
    assert!(
        !krl_revokes(&setup.krl(), &alice.cert),
        "an expired certificate is refused by its own valid_before, without a KRL entry"
    );
}

#[test]
fn ssh_revoked_certificate_refused_by_krl() {
    let setup = Setup::new();
    let alice = setup.grant("alice", "login", "30m", "alice");
    let dave = setup.grant("dave", "login", "30m", "dave");
    setup.assert_logs_in(&alice, "before revocation");
    assert!(!krl_revokes(&setup.krl(), &alice.cert), "not revoked yet");

    let revoked = setup.runtime.block_on(setup.client("alice").revoke(&alice.grant.id, None)).expect("revoked");
    assert_eq!(revoked.state, GrantState::Revoked, "{revoked:?}");
    assert_eq!(
        revoked.revocation.as_ref().map(|r| r.status),
        Some(RevocationStatus::Done),
        "the broker confirmed the KRL lists it: {revoked:?}"
    );
    assert!(krl_revokes(&setup.krl(), &alice.cert), "OpenSSH reads alice's certificate as revoked in the KRL");
    setup.assert_refused(&alice, "a revoked certificate, well before its valid_before");
    assert!(
        setup.sshd.log().contains(&format!("revoked by file {}", setup.krl().display())),
        "sshd refused it as revoked by the broker's KRL: {}",
        setup.sshd.log()
    );
    setup.assert_logs_in(&dave, "another grant on the same sshd is untouched");
}

#[test]
fn ssh_renewed_certificate_outlives_the_old_deadline() {
    let setup = Setup::new();
    let first = setup.grant("alice", "login", "10s", "first");
    let renewed = setup
        .runtime
        .block_on(setup.client("alice").renew(&first.grant.id, "2m", None))
        .expect("renewed within policy");
    assert!(renewed.grant.expires_at > first.grant.expires_at, "the deadline moved: {renewed:?}");
    let credential = setup.credential("alice", &first.grant);
    let second =
        Login { grant: renewed.grant.clone(), key: first.key.clone(), cert: setup.dir.path().join("second-cert.pub") };
    write_cert(&second.cert, &credential);
    assert_ne!(
        std::fs::read(&first.cert).expect("first"),
        std::fs::read(&second.cert).expect("second"),
        "a new certificate"
    );
    setup.assert_logs_in(&second, "the renewed certificate works");

    // Past the first deadline the old certificate is dead and the new one lives.
    let old_dead = eventually(Duration::from_secs(40), || (!setup.ssh(&first).ok).then_some(()));
    assert!(old_dead.is_some(), "the first certificate ends at the old deadline");
    setup.assert_refused(&first, "the first certificate is past its valid_before");
    assert!(setup.sshd.log().contains("Certificate invalid: expired"), "refused as expired: {}", setup.sshd.log());
    setup.assert_logs_in(&second, "the renewed certificate is valid past the old deadline");
    assert_eq!(setup.grant_now("alice", &first.grant).state, GrantState::Active, "the grant lives on");
}

#[test]
fn ssh_malformed_public_key_refused_at_filing() {
    let setup = Setup::new();
    let private = hourglass_client::material::ssh().expect("a key");
    let private_text = private.private_key.to_openssh(Default::default()).expect("encodes").to_string();
    let cases: &[(Option<&str>, &str)] = &[
        (Some("ssh-ed25519 AAAAthis-is-not-base64"), "is not an OpenSSH public key"),
        (Some(&private_text), "holds a private key"),
        (
            Some(
                "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC8M+TloZaK6hyB3o9xQvkXTbKoAO2XyQ5kPB7MxBIEWSSFXlFKV0zuMiz+v6CBnyMRTzAAR3EYUJf3uFNEHluO9wYaTvIZa3slbkx19VxJmeb8iwiOxcU/+Hdq2ZumBb9aXu2KTT0tBpjP5xKNJLRgsTO+vsJHSBLnEeBYx4E1RQ==",
            ),
            "too weak",
        ),
        (None, "needs client_material.ssh_public_key"),
    ];
    for (key, expected) in cases {
        let mut body = serde_json::json!({ "resource": "box", "role": "login", "duration": "10m", "reason": "e2e" });
        if let Some(key) = key {
            body["client_material"] = serde_json::json!({ "ssh_public_key": key });
        }
        let (status, response) =
            setup.broker.http("POST", "/v1/requests", Some(setup.broker.token("alice")), Some(&body.to_string()));
        let error: serde_json::Value = serde_json::from_slice(&response).expect("a JSON error");
        assert_eq!(status, 400, "refused when filed ({expected}): {error}");
        assert_eq!(error["code"], "invalid_request", "{error}");
        let message = error["message"].as_str().expect("a message");
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        assert!(!message.contains("PRIVATE"), "nothing of a private key is echoed: {message}");
    }
    let requests = setup.runtime.block_on(setup.client("alice").requests()).expect("requests");
    assert!(requests.mine.is_empty(), "no request was filed: {:?}", requests.mine);
    let grants = setup.runtime.block_on(setup.client("alice").grants(true, false)).expect("grants");
    assert!(grants.grants.is_empty(), "no grant was created: {:?}", grants.grants);
    assert!(!setup.krl().exists(), "no certificate was signed, so no KRL was written");
}
