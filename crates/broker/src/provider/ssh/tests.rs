//! The SSH provider's own tests.

use std::process::Command;

use hourglass_core::{AccessRequest, Duration, GrantId, GrantState, NewRequest, RequestId};

use super::*;

/// 2026-11-18T09:46:40Z: a fixed broker clock.
const NOW: Timestamp = Timestamp::from_unix_millis(1_795_000_000_000);

const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC8M+TloZaK6hyB3o9xQvkXTbKoAO2XyQ5kPB7MxBIEWSSFXlFKV0zuMiz+v6CBnyMRTzAAR3EYUJf3uFNEHluO9wYaTvIZa3slbkx19VxJmeb8iwiOxcU/+Hdq2ZumBb9aXu2KTT0tBpjP5xKNJLRgsTO+vsJHSBLnEeBYx4E1RQ== test-rsa-1024";
const RSA_2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDD4BbSAapEhkoPZuCsooeiwFaajcg7tnVwxeBR6XwDfQ/Sm3CC0KDDbGVJKzqq9/XsqHPv8cNemybXlK863IArQLGvdngV6a2V+t9VVNfK35N9E19JhZ1YDiqZpdrK1/0GUmO8PzGKZqLNdtBXnTfRN/6AduU79FmRIWP56mEDlhdc1qWFG1tjabJbOI+3JxVPf7DYo0z7Y7F0O3tn95CzjNlSxn78JvlxKP95LoL1xXAyGMrk0+7WEt9v2RYpp+kzWZqfDD5ulLCuiXBk5DOhuC151MC3XApJVff/eEVEWSUEiwDZqS1Q8DubQ8ASQ4R0m0Wpp5y/vkSXCNiwwQeJ test-rsa-2048";
const ECDSA_256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEFETUlTY3Zpvzf/cLjbOu0tBIqvs2XwmB+0c91W7xx18pLdIev4YU784yihvXYyT19xVTNhUm6IarlrZJ7K72M= test-ecdsa-256";
const ECDSA_384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBAsi3S5/VAicnji1X+3+Jn3uXo7cLIKPVdktupUtE3xGKBi5/k2aqrssGs/32vwIioSURS0SL0rhuYtxJaAn5K4CMNfIUSjrbsWAoWuRbnp0khno1HMhM9gqjGcEy9TWKg== test-ecdsa-384";
const DSA_1024: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBANxWb2+WEUeYa8yPZ1XYz3XDo8ML3K9L6e0EvjnjD9NqXyCWsoz1EJtqlEQ5mHS9uEDXlDElwELbPfJ1Mce8SKBRzfsiCpkDG625d7NlSVuweMegaEfHY91P2mLy1cpcBa8zdXxRdcKv3mq5y91/BC6p1sEI4CMEUmzLuMmDiFPpAAAAFQDEeIgMvLwKXy8dmjaY4t/Apc/onQAAAIEAr868Czxp4xc7YqZoTOo+LJSMIkP2PJsMJTOlvN//KXIiD68g25wgQcHKzoBE+9STdqFDjpnLcJG9JGwDwg64dDmYcvhPDynkSdk1UjDWMXSBCtv46VF9duPRrRpcRDJzHlLwM4KBa37vzHEuYMCflRYOmKA+n7EEGlEE9Qv/SaoAAACBAKVvOgrYkiWNAygqLs55HiS0o8qYkl52sKEsi+QeKHB+jSeT+DuXtQSR/h9XEzYaRJlFz80l9mllhdwR3bILZDBV1CTrXo936PnN/lLTk0pdD6oGBK2MPkvo/LPpep7pxaa/O14SKN1ha9E8iRL1jpHeio/Hi9GKfdgQ3f3JHk3f test-dsa-1024";

fn resource(settings: &str, role_settings: &str) -> Resource {
    let toml = format!(
        "[workflows.w]\napprovals = [{{ group = \"g\", count = 1 }}]\n[resources.box]\nprovider = \"ssh\"\nworkflow = \"w\"\nsettings = {settings}\n[resources.box.roles.login]\nsettings = {role_settings}\n"
    );
    let policy = hourglass_policy::Policy::from_sources(vec![("hourglass.toml".into(), toml)]).expect("policy loads");
    policy.resources["box"].clone()
}

fn grant(owner: &str, now: Timestamp, duration: Duration) -> Grant {
    let request = AccessRequest::file(
        RequestId::from_random(rand::random()),
        NewRequest {
            requester: owner.into(),
            resource: "box".into(),
            role: "login".into(),
            duration,
            reason: "test".into(),
            ticket: None,
            break_glass: false,
            renews: None,
        },
        Vec::new(),
        Duration::from_mins(5),
        now,
    );
    Grant::start(GrantId::from_random(rand::random()), &request, KIND, now)
}

fn client_key() -> (PrivateKey, ClientMaterial) {
    let key = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).expect("a key");
    let public = key.public_key().to_openssh().expect("encodes");
    (key, ClientMaterial { postgres_scram_verifier: None, ssh_public_key: Some(public) })
}

fn ssh_keygen(args: &[&str]) -> std::process::Output {
    Command::new("/usr/bin/ssh-keygen")
        .args(args)
        .output()
        .expect("/usr/bin/ssh-keygen runs (these tests check the KRL with OpenSSH's own reader)")
}

/// A broker's store and SSH user CA, for providers to start on (again).
struct Broker {
    dir: tempfile::TempDir,
    store: crate::store::Store,
    ca: Ed25519Key,
}

impl Broker {
    async fn new() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::Store::open_sqlite(&dir.path().join("hourglass.db")).await.expect("a store");
        Broker { dir, store, ca: Ed25519Key::generate().expect("a CA key") }
    }

    /// The provider as a (re)started broker opens it.
    async fn provider(&self) -> SshProvider {
        let record = SharedRecord::new(self.store.clone(), "ssh/revocations");
        SshProvider::open(&self.ca, record, &self.dir.path().join("ssh")).await.expect("provider starts")
    }
}

struct Fixture {
    broker: Broker,
    dir: PathBuf,
    provider: SshProvider,
    resource: Resource,
}

impl Fixture {
    /// A provider of a fresh broker and a resource whose KRL goes to
    /// `DIR/sshd/revoked.krl`.
    async fn new(role_settings: &str) -> Fixture {
        let broker = Broker::new().await;
        let provider = broker.provider().await;
        let dir = broker.dir.path().to_path_buf();
        let krl = dir.join("sshd/revoked.krl");
        let resource = resource(
            &format!("{{ host = \"box.example\", krl_file = \"{}\", env_prefix = \"BOX\" }}", krl.display()),
            role_settings,
        );
        Fixture { broker, dir, provider, resource }
    }

    fn krl_path(&self) -> PathBuf {
        self.dir.join("sshd/revoked.krl")
    }

    async fn issue(&self, grant: &Grant, material: &ClientMaterial) -> Issued {
        let input = IssueInput {
            grant,
            resource: &self.resource,
            role: &self.resource.roles["login"],
            now: grant.issued_at,
            material: Some(material),
            ticket: None,
        };
        self.provider.issue(input).await.expect("issued")
    }

    /// Writes the grant's certificate where ssh-keygen can read it.
    fn cert_file(&self, state: &serde_json::Value, name: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}-cert.pub"));
        std::fs::write(&path, format!("{}\n", state["certificate"].as_str().expect("a certificate")))
            .expect("cert file");
        path
    }
}

fn certificate(state: &serde_json::Value) -> Certificate {
    Certificate::from_openssh(state["certificate"].as_str().expect("state holds the certificate"))
        .expect("an OpenSSH certificate")
}

/// Whether OpenSSH's own reader says the KRL revokes the certificate.
fn ssh_keygen_says_revoked(krl: &Path, cert: &Path) -> bool {
    let out = ssh_keygen(&["-Q", "-f", &krl.display().to_string(), &cert.display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) if stdout.contains(": ok") => false,
        Some(1) if stdout.contains("REVOKED") => true,
        _ => panic!("ssh-keygen -Q failed: {stdout} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test]
async fn settings_are_checked_with_clear_messages() {
    let provider = Broker::new().await.provider().await;
    let ok_role = "{ principals = [\"ops\"] }";
    let cases = [
        ("{ }", ok_role, None),
        ("{ host = \"bastion.example\", port = 2222, krl_file = \"/etc/ssh/hg.krl\" }", ok_role, None),
        ("{ env_prefix = \"BASTION\" }", "{ principals = [\"ops\", \"deploy\"], extensions = [] }", None),
        (
            "{ }",
            "{ principals = [\"ops\"], extensions = [\"permit-pty\", \"permit-port-forwarding\"], force_command = \"/usr/bin/uptime\", source_address = [\"10.0.0.0/8\", \"2001:db8::1\"] }",
            None,
        ),
        ("{ hostname = \"x\" }", ok_role, Some("unknown field `hostname`")),
        ("{ host = \"two words\" }", ok_role, Some("is not a host name")),
        ("{ host = \"h\", port = 0 }", ok_role, Some("port must be between 1 and 65535")),
        ("{ host = \"h\", port = 70000 }", ok_role, Some("u16")),
        ("{ port = 22 }", ok_role, Some("port is set without host")),
        ("{ krl_file = \"revoked.krl\" }", ok_role, Some("must be an absolute path")),
        ("{ env_prefix = \"box-ssh\" }", ok_role, Some("env_prefix")),
        ("{ }", "{ }", Some("missing field `principals`")),
        ("{ }", "{ principals = [] }", Some("settings.principals must name")),
        ("{ }", "{ principals = [\"a b\"] }", Some("must be a login name")),
        ("{ }", "{ principals = [\"a,b\"] }", Some("must be a login name")),
        ("{ }", "{ principals = [\"ops\", \"ops\"] }", Some("listed twice")),
        ("{ }", "{ principals = [\"ops\"], user = \"root\" }", Some("unknown field `user`")),
        ("{ }", "{ principals = [\"ops\"], extensions = [\"permit-everything\"] }", Some("not an OpenSSH")),
        ("{ }", "{ principals = [\"ops\"], extensions = [\"permit-pty\", \"permit-pty\"] }", Some("twice")),
        ("{ }", "{ principals = [\"ops\"], force_command = \" \" }", Some("force_command must be")),
        ("{ }", "{ principals = [\"ops\"], source_address = [] }", Some("at least one address")),
        ("{ }", "{ principals = [\"ops\"], source_address = [\"10.0.0.0/33\"] }", Some("not an IP address")),
        ("{ }", "{ principals = [\"ops\"], source_address = [\"example.com\"] }", Some("not an IP address")),
    ];
    for (settings, role, expected) in cases {
        let outcome = provider.check(&resource(settings, role));
        match expected {
            None => assert_eq!(outcome, Ok(()), "valid: {settings} {role}"),
            Some(text) => {
                let error = outcome.expect_err(settings);
                assert!(error.contains(text), "{settings} {role}: expected {text:?} in {error:?}");
                if role != ok_role {
                    assert!(error.starts_with("role \"login\": "), "role errors name the role: {error}");
                }
            }
        }
    }
}

#[tokio::test]
async fn public_keys_are_checked_when_the_request_is_filed() {
    let provider = Broker::new().await.provider().await;
    let (private, ok) = client_key();
    let ed25519 = ok.ssh_public_key.clone().expect("public key");
    let private_text = private.to_openssh(ssh_key::LineEnding::LF).expect("encodes").to_string();
    let material = |key: &str| ClientMaterial { postgres_scram_verifier: None, ssh_public_key: Some(key.into()) };
    for good in [ed25519.as_str(), RSA_2048, ECDSA_256, ECDSA_384] {
        assert_eq!(provider.check_material(Some(&material(good))), Ok(()), "accepted: {good}");
    }
    let without_comment = ed25519.split(' ').take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(provider.check_material(Some(&material(&without_comment))), Ok(()), "the comment is optional");

    let (_, other) = client_key();
    let other_body = other.ssh_public_key.expect("key").split(' ').nth(1).expect("base64").to_owned();
    let cases = [
        (private_text.as_str(), "holds a private key"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJunk!!", "is not an OpenSSH public key"),
        ("hello", "is not an OpenSSH public key"),
        ("", "is not an OpenSSH public key"),
        (&format!("ssh-rsa {other_body}"), "is not an OpenSSH public key"),
        (&format!("{ed25519}\n{ed25519}"), "single line"),
        ("ssh-ed25519-cert-v01@openssh.com AAAA", "is a certificate"),
        (RSA_1024, "1024-bit RSA key, too weak"),
        (DSA_1024, "ssh-dss key, which is not accepted"),
    ];
    for (bad, expected) in cases {
        let error = provider.check_material(Some(&material(bad))).expect_err(bad);
        assert!(error.contains(expected), "{bad:?}: expected {expected:?} in {error:?}");
        assert!(bad.len() < 8 || !error.contains(bad), "the refusal never echoes what was sent: {error}");
        assert!(!error.contains("PRIVATE"), "nothing of a private key is echoed: {error}");
    }
    let missing = provider.check_material(None).expect_err("no material");
    assert!(missing.contains("needs client_material.ssh_public_key"), "{missing}");
    let verifier = ClientMaterial { postgres_scram_verifier: Some("SCRAM".into()), ssh_public_key: None };
    assert!(provider.check_material(Some(&verifier)).is_err(), "a PostgreSQL verifier is not an SSH key");
}

#[tokio::test]
async fn certificate_carries_key_id_principals_deadline_and_options() {
    let fixture = Fixture::new(
        "{ principals = [\"ops\", \"deploy\"], extensions = [\"permit-pty\", \"permit-agent-forwarding\"], force_command = \"/usr/bin/uptime\", source_address = [\"10.0.0.0/8\"] }",
    ).await;
    let (client, material) = client_key();
    let grant = grant("alice@acme.example", NOW, Duration::from_mins(30));
    let issued = fixture.issue(&grant, &material).await;
    assert!(issued.ready, "a certificate signed by the trusted CA works as issued");
    let cert = certificate(&issued.state);

    let ca = fixture.provider.document("ca.pub", Some(&fixture.resource)).await.expect("the resource's ca.pub");
    let ca = PublicKey::from_openssh(std::str::from_utf8(&ca.body).expect("text").trim()).expect("ca.pub parses");
    cert.validate_at(u64::try_from(NOW.unix_seconds()).expect("after 1970"), [&ca.fingerprint(HashAlg::Sha256)])
        .expect("the certificate validates against the published CA key");
    assert_eq!(cert.public_key(), client.public_key().key_data(), "certifies the client's own key");
    assert_eq!(cert.cert_type(), CertType::User, "a user certificate");
    assert_eq!(cert.key_id(), format!("hourglass:{}:alice@acme.example", grant.id), "key id names grant and owner");
    assert_eq!(cert.valid_principals(), ["ops", "deploy"], "principals from the role");
    assert_eq!(
        cert.valid_before(),
        u64::try_from(grant.expires_at.unix_seconds()).expect("positive"),
        "dies at the grant's deadline"
    );
    assert_eq!(
        cert.valid_after(),
        u64::try_from(NOW.unix_seconds() - 60).expect("positive"),
        "valid from a minute before issue, for clock skew"
    );
    let extensions: Vec<&str> = cert.extensions().keys().map(String::as_str).collect();
    assert_eq!(extensions, ["permit-agent-forwarding", "permit-pty"], "extensions from the role, nothing more");
    assert_eq!(cert.critical_options().get("force-command").map(String::as_str), Some("/usr/bin/uptime"));
    assert_eq!(cert.critical_options().get("source-address").map(String::as_str), Some("10.0.0.0/8"));
    assert_ne!(cert.serial(), 0, "a random serial");

    assert_eq!(issued.state["key_id"], cert.key_id(), "state records the key id");
    assert_eq!(issued.state["serials"], serde_json::json!([cert.serial()]), "state records the serial");
    assert_eq!(issued.state["valid_before"], grant.expires_at.to_string(), "state records the deadline");
    assert!(!issued.state.to_string().contains("PRIVATE"), "no private key in the stored state");
    assert_eq!(issued.verification["key_id"], cert.key_id(), "verification says what was checked");
    assert!(
        issued.verification["certificate"].as_str().is_some_and(|c| c.contains("validates against the user CA")),
        "{:?}",
        issued.verification
    );

    // Default extensions: a pty, and nothing else.
    let plain = Fixture::new("{ principals = [\"ops\"] }").await;
    let issued = plain.issue(&grant, &material).await;
    let extensions: Vec<String> = certificate(&issued.state).extensions().keys().cloned().collect();
    assert_eq!(extensions, ["permit-pty"], "permit-pty by default");
    assert!(certificate(&issued.state).critical_options().is_empty(), "no critical options unless asked");
}

#[tokio::test]
async fn renewal_signs_a_new_certificate_with_the_same_key_id_and_the_new_deadline() {
    let fixture = Fixture::new("{ principals = [\"ops\"] }").await;
    let (_, material) = client_key();
    let mut grant = grant("alice@acme.example", NOW, Duration::from_mins(5));
    let issued = fixture.issue(&grant, &material).await;
    let first = certificate(&issued.state);

    let later = NOW.plus(Duration::from_mins(3));
    grant.expires_at = later.plus(Duration::from_hours(1));
    let input = IssueInput {
        grant: &grant,
        resource: &fixture.resource,
        role: &fixture.resource.roles["login"],
        now: later,
        material: None,
        ticket: None,
    };
    let renewed = fixture.provider.renew(input, &issued.state).await.expect("renewed");
    let second = certificate(&renewed.state);
    assert_eq!(second.key_id(), first.key_id(), "same key id: one KRL entry covers both");
    assert_eq!(second.public_key(), first.public_key(), "same client key");
    assert!(second.valid_before() > first.valid_before(), "the new certificate outlives the old deadline");
    assert_eq!(second.valid_before(), u64::try_from(grant.expires_at.unix_seconds()).expect("positive"));
    assert_ne!(second.serial(), first.serial(), "a new serial");
    assert_eq!(
        renewed.state["serials"],
        serde_json::json!([first.serial(), second.serial()]),
        "every serial is recorded"
    );
    assert_eq!(renewed.state["latest_valid_before"], grant.expires_at.to_string());
    assert_eq!(renewed.verification["previous_serial"], first.serial(), "{:?}", renewed.verification);

    // A renewal to a shorter deadline keeps the latest one for revocation.
    let shorter = later.plus(Duration::from_mins(10));
    grant.expires_at = shorter;
    let input = IssueInput {
        grant: &grant,
        resource: &fixture.resource,
        role: &fixture.resource.roles["login"],
        now: later,
        material: None,
        ticket: None,
    };
    let shortened = fixture.provider.renew(input, &renewed.state).await.expect("renewed");
    assert_eq!(shortened.state["valid_before"], shorter.to_string(), "the current certificate's deadline");
    assert_eq!(
        shortened.state["latest_valid_before"], renewed.state["latest_valid_before"],
        "the older, longer-lived certificate still counts for revocation"
    );
}

#[tokio::test]
async fn credential_hands_out_the_certificate_and_connection_info() {
    let fixture = Fixture::new("{ principals = [\"ops\"] }").await;
    let (_, material) = client_key();
    let grant = grant("alice@acme.example", NOW, Duration::from_mins(5));
    let issued = fixture.issue(&grant, &material).await;
    let input = IssueInput {
        grant: &grant,
        resource: &fixture.resource,
        role: &fixture.resource.roles["login"],
        now: NOW,
        material: None,
        ticket: None,
    };
    let credential = fixture.provider.credential(input, &issued.state).await.expect("credential");
    assert_eq!(credential.provider, "ssh");
    assert_eq!(credential.ssh_certificate.as_deref(), issued.state["certificate"].as_str(), "the certificate");
    assert_eq!(credential.client_secret, Some(ClientSecret::SshPrivateKey), "completed by the client's key");
    let env: Vec<(&str, &str, bool)> =
        credential.env.iter().map(|v| (v.name.as_str(), v.value.as_str(), v.secret)).collect();
    assert_eq!(
        env,
        [("BOX_SSH_HOST", "box.example", false), ("BOX_SSH_PORT", "22", false), ("BOX_SSH_USER", "ops", false)],
        "non-secret connection info only"
    );
}

#[tokio::test]
async fn the_ca_is_published_and_an_older_brokers_ca_file_is_read_for_the_store() {
    let broker = Broker::new().await;
    let provider = broker.provider().await;
    let ssh_dir = broker.dir.path().join("ssh");
    let document = provider.document("ca.pub", None).await.expect("ca.pub is served");
    assert_eq!(document.content_type, "text/plain; charset=utf-8");
    let line = String::from_utf8(document.body).expect("text");
    assert!(line.starts_with("ssh-ed25519 ") && line.ends_with('\n'), "one OpenSSH public key line: {line}");
    assert!(!line.contains("PRIVATE"), "only the public half is published");
    assert_eq!(std::fs::read_to_string(ssh_dir.join(CA_PUBLIC_FILE)).expect("user_ca.pub"), line);
    assert!(provider.document("user_ca", None).await.is_none(), "nothing else is served");
    assert!(!ssh_dir.join(LEGACY_CA_FILE).exists(), "the private key is in the store, not in a file");

    let again = broker.provider().await;
    let reloaded = String::from_utf8(again.document("ca.pub", None).await.expect("ca.pub").body).expect("text");
    assert_eq!(reloaded, line, "the same CA after a restart");

    // An older broker's CA file, moved into the store on upgrade: the same key.
    let legacy = tempfile::tempdir().expect("temp dir");
    let mut key = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).expect("key");
    key.set_comment(CA_COMMENT);
    let text = key.to_openssh(ssh_key::LineEnding::LF).expect("encodes");
    std::fs::write(legacy.path().join(LEGACY_CA_FILE), text.as_bytes()).expect("write");
    let read = SshProvider::legacy_ca(legacy.path()).expect("reads").expect("found");
    let ed25519 = key.key_data().ed25519().expect("an Ed25519 key");
    assert_eq!(read.public(), ed25519.public.0, "the same key");
    assert!(SshProvider::legacy_ca(broker.dir.path()).expect("nothing there").is_none());

    let corrupt = tempfile::tempdir().expect("temp dir");
    std::fs::write(corrupt.path().join(LEGACY_CA_FILE), "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0IHNlY3JldA==\n")
        .expect("write");
    let error = SshProvider::legacy_ca(corrupt.path()).err().expect("refused");
    assert!(error.contains("is not an OpenSSH private key"), "{error}");
    assert!(!error.contains("c2VjcmV0"), "the key file's content never reaches an error: {error}");
}

#[test]
fn krl_encoding_matches_ssh_keygen_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).expect("key");
    let ca_pub = dir.path().join("ca.pub");
    std::fs::write(&ca_pub, ca.public_key().to_openssh().expect("encodes")).expect("write");
    let spec = dir.path().join("spec");
    let ids = ["hourglass:grt-aaaa:alice@acme.example", "hourglass:grt-bbbb:bob@acme.example"];
    std::fs::write(&spec, ids.iter().map(|id| format!("id: {id}\n")).collect::<String>()).expect("write");
    let krl_path = dir.path().join("theirs.krl");
    let out = ssh_keygen(&[
        "-k",
        "-z",
        "7",
        "-f",
        &krl_path.display().to_string(),
        "-s",
        &ca_pub.display().to_string(),
        &spec.display().to_string(),
    ]);
    assert!(out.status.success(), "ssh-keygen -k: {}", String::from_utf8_lossy(&out.stderr));
    let theirs = std::fs::read(&krl_path).expect("KRL");
    let blob = ca.public_key().to_bytes().expect("blob");
    let generated_at = u64::from_be_bytes(theirs[20..28].try_into().expect("8 bytes"));
    let ours = krl::encode(7, generated_at, "", &blob, &ids);
    assert_eq!(ours, theirs, "the same bytes as OpenSSH writes for the same revocations");

    let decoded = krl::decode(&theirs).expect("our reader reads OpenSSH's KRL");
    assert_eq!(decoded.version, 7);
    assert!(ids.iter().all(|id| decoded.lists(&blob, id)), "both key ids listed: {decoded:?}");
    assert!(!decoded.lists(&blob, "hourglass:grt-cccc:carol@acme.example"), "and nothing else");

    let empty = krl::encode(1, generated_at, revocations::KRL_COMMENT, &blob, &[]);
    let decoded = krl::decode(&empty).expect("an empty KRL decodes");
    assert_eq!(decoded.comment, revocations::KRL_COMMENT);
    assert!(decoded.revoked_key_ids.is_empty(), "an empty KRL revokes nothing");
}

#[test]
fn krl_reader_refuses_what_is_not_a_krl() {
    let blob = b"ca";
    let good = krl::encode(1, 2, "c", blob, &["id"]);
    assert!(krl::decode(b"SSHKRL\n").is_err(), "truncated magic");
    assert!(krl::decode(&good[..good.len() - 1]).is_err(), "a truncated KRL is refused");
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(krl::decode(&bad_magic).expect_err("bad magic").contains("bad magic"));
    let mut bad_format = good.clone();
    bad_format[11] = 2;
    assert!(krl::decode(&bad_format).expect_err("format").contains("format version 2"));
    assert!(krl::decode(&good).expect("good").lists(blob, "id"), "the untouched KRL decodes");
}

#[tokio::test]
async fn issue_writes_the_krl_file_before_the_certificate_leaves() {
    let fixture = Fixture::new("{ principals = [\"ops\"] }").await;
    assert!(!fixture.krl_path().exists(), "check and start write nothing for a resource never issued");
    let (_, material) = client_key();
    let grant = grant("alice@acme.example", NOW, Duration::from_mins(5));
    let issued = fixture.issue(&grant, &material).await;
    let krl = std::fs::read(fixture.krl_path()).expect("the krl_file exists once a certificate is issued");
    assert!(krl::decode(&krl).expect("a KRL").revoked_key_ids.is_empty(), "nothing revoked yet");
    let cert = fixture.cert_file(&issued.state, "alice");
    assert!(!ssh_keygen_says_revoked(&fixture.krl_path(), &cert), "OpenSSH reads it and finds nothing revoked");
    assert!(issued.verification["krl_file"].as_str().is_some_and(|f| f.contains("revoked.krl")));
}

#[tokio::test]
async fn revoked_certificates_are_listed_in_the_krl_openssh_reads() {
    let fixture = Fixture::new("{ principals = [\"ops\"] }").await;
    let (_, alice_key) = client_key();
    let (_, bob_key) = client_key();
    let mut alice = grant("alice@acme.example", NOW, Duration::from_mins(30));
    let bob = grant("bob@acme.example", NOW, Duration::from_mins(30));
    let alice_issued = fixture.issue(&alice, &alice_key).await;
    let bob_issued = fixture.issue(&bob, &bob_key).await;
    let alice_cert = fixture.cert_file(&alice_issued.state, "alice");
    let bob_cert = fixture.cert_file(&bob_issued.state, "bob");

    let later = NOW.plus(Duration::from_mins(1));
    alice.state = GrantState::Revoked;
    let verification = fixture.provider.revoke(&alice, &alice_issued.state, later).await.expect("revoked");
    let key_id = alice_issued.state["key_id"].as_str().expect("key id");
    assert_eq!(verification["krl"], format!("lists {key_id}"), "{verification:?}");
    assert_eq!(verification["krl_version"], 1, "the first change");
    assert_eq!(
        verification["files"],
        serde_json::json!([fixture.krl_path().display().to_string()]),
        "{verification:?}"
    );
    assert!(ssh_keygen_says_revoked(&fixture.krl_path(), &alice_cert), "OpenSSH finds alice's certificate revoked");
    assert!(!ssh_keygen_says_revoked(&fixture.krl_path(), &bob_cert), "bob's certificate is untouched");

    let served = fixture.provider.document("krl", None).await.expect("krl is served");
    assert_eq!(served.content_type, "application/octet-stream");
    assert_eq!(served.body, std::fs::read(fixture.krl_path()).expect("file"), "served and written KRLs agree");

    // Revoking again (a retry) changes nothing.
    let again = fixture.provider.revoke(&alice, &alice_issued.state, later).await.expect("idempotent");
    assert_eq!(again["krl_version"], 1, "a repeated revocation does not bump the version");

    // The list survives a restart, and the restarted broker still serves it.
    let restarted = fixture.broker.provider().await;
    let served_after = restarted.document("krl", None).await.expect("krl");
    assert_eq!(served_after.body, served.body, "the same KRL after a restart");
    std::fs::remove_file(fixture.krl_path()).expect("remove");
    let _rewritten = fixture.broker.provider().await;
    assert!(ssh_keygen_says_revoked(&fixture.krl_path(), &alice_cert), "a lost krl_file is rewritten at start");
}

#[tokio::test]
async fn revocations_by_one_replica_are_in_the_krl_every_replica_serves() {
    let fixture = Fixture::new("{ principals = [\"ops\"] }").await;
    // A second broker on the same store (on PostgreSQL, another replica).
    let other = fixture.broker.provider().await;
    let (_, key) = client_key();
    let alice = grant("alice@acme.example", NOW, Duration::from_mins(30));
    let issued = fixture.issue(&alice, &key).await;
    let mut revoked = alice.clone();
    revoked.state = GrantState::Revoked;
    other.revoke(&revoked, &issued.state, NOW).await.expect("revoked by the other replica");
    let key_id = issued.state["key_id"].as_str().expect("key id");
    for (which, provider) in [("the revoking replica", &other), ("the other one", &fixture.provider)] {
        let served = krl::decode(&provider.document("krl", None).await.expect("krl").body).expect("a KRL");
        assert_eq!(served.version, 1, "{which} serves the stored version");
        assert!(served.revoked_key_ids.iter().any(|(_, id)| id == key_id), "{which} lists {key_id}");
    }
}

#[tokio::test]
async fn expired_certificates_need_no_krl_entry_and_are_pruned() {
    let fixture = Fixture::new("{ principals = [\"ops\"] }").await;
    let (_, key) = client_key();
    let mut short = grant("alice@acme.example", NOW, Duration::from_mins(1));
    let long = grant("bob@acme.example", NOW, Duration::from_mins(30));
    let short_issued = fixture.issue(&short, &key).await;
    let long_issued = fixture.issue(&long, &key).await;

    // Expired naturally: past valid_before, sshd refuses it already.
    let mut expired = short.clone();
    expired.state = GrantState::Expired;
    let verification = fixture.provider.revoke(&expired, &short_issued.state, short.expires_at).await.expect("expired");
    assert!(verification["certificate"].as_str().is_some_and(|c| c.contains("past valid_before")), "{verification:?}");
    let krl = krl::decode(&fixture.provider.document("krl", None).await.expect("krl").body).expect("KRL");
    assert!(krl.revoked_key_ids.is_empty(), "no entry for a certificate that is dead anyway");

    // Revoked early, then pruned once its certificate has expired.
    short.state = GrantState::Revoked;
    fixture.provider.revoke(&short, &short_issued.state, NOW).await.expect("revoked");
    let short_id = short_issued.state["key_id"].as_str().expect("key id");
    let long_id = long_issued.state["key_id"].as_str().expect("key id");
    let after = short.expires_at.plus(Duration::from_secs(1));
    let verification = fixture.provider.revoke(&long, &long_issued.state, after).await.expect("revoked");
    assert_eq!(verification["krl_version"], 2, "{verification:?}");
    let krl = krl::decode(&std::fs::read(fixture.krl_path()).expect("file")).expect("KRL");
    let listed: Vec<&str> = krl.revoked_key_ids.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(listed, [long_id], "{short_id} is past valid_before and dropped; {long_id} is listed");

    // A grant whose issue never produced a certificate has nothing to revoke.
    let failed = grant("carol@acme.example", NOW, Duration::from_mins(5));
    let verification = fixture.provider.revoke(&failed, &serde_json::Value::Null, NOW).await.expect("nothing");
    assert_eq!(verification["certificate"], "none was issued");
}

#[tokio::test]
async fn each_resource_has_its_own_ca_and_its_certificates_do_not_validate_against_another() {
    let broker = Broker::new().await;
    let provider = broker.provider().await;
    let staging = resource("{ }", "{ principals = [\"ops\"] }");
    let mut production = resource("{ }", "{ principals = [\"ops\"] }");
    production.name = "production".into();
    let shared = resource("{ ca = \"shared\" }", "{ principals = [\"ops\"] }");
    let ca_of = async |resource: Option<&Resource>| {
        let line = provider.document("ca.pub", resource).await.expect("ca.pub");
        PublicKey::from_openssh(std::str::from_utf8(&line.body).expect("text").trim()).expect("parses")
    };
    let (staging_ca, production_ca, shared_ca) =
        (ca_of(Some(&staging)).await, ca_of(Some(&production)).await, ca_of(None).await);
    assert_ne!(staging_ca.key_data(), production_ca.key_data(), "two resources, two CAs");
    assert_ne!(staging_ca.key_data(), shared_ca.key_data(), "neither is the shared CA");
    assert_eq!(ca_of(Some(&shared)).await.key_data(), shared_ca.key_data(), "ca = \"shared\" uses the shared CA");
    let again = broker.provider().await;
    let line = again.document("ca.pub", Some(&staging)).await.expect("ca.pub").body;
    assert_eq!(
        std::str::from_utf8(&line).expect("text").trim(),
        staging_ca.to_openssh().expect("encodes").trim(),
        "derived again the same"
    );

    let (_, material) = client_key();
    let grant = grant("alice@acme.example", NOW, Duration::from_mins(30));
    let input = IssueInput {
        grant: &grant,
        resource: &staging,
        role: &staging.roles["login"],
        now: NOW,
        material: Some(&material),
        ticket: None,
    };
    let issued = provider.issue(input).await.expect("issued");
    let cert = certificate(&issued.state);
    let now = u64::try_from(NOW.unix_seconds()).expect("after 1970");
    cert.validate_at(now, [&staging_ca.fingerprint(HashAlg::Sha256)]).expect("valid for the staging hosts' CA");
    assert!(cert.validate_at(now, [&production_ca.fingerprint(HashAlg::Sha256)]).is_err(), "not for production's");
    assert!(cert.validate_at(now, [&shared_ca.fingerprint(HashAlg::Sha256)]).is_err(), "nor the shared CA's");
    assert!(
        Settings::parse(&resource("{ ca = \"everyone\" }", "{ principals = [\"ops\"] }")).is_err(),
        "a typo is refused"
    );
}
