//! OpenSSH user certificates: the broker's SSH provider issuing one
//! in-process (sign, then verify as sshd would), against `ssh-keygen -s`
//! signing the same kind of certificate with a CA key on disk.

use std::process::Command;
use std::time::{Duration, Instant};

use hourglass_broker::provider::ssh::SshProvider;
use hourglass_broker::provider::{IssueInput, Provider};
use hourglass_core::api::ClientMaterial;
use hourglass_core::{AccessRequest, Grant, GrantId, NewRequest, RequestId, Timestamp};
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::stats::Summary;

fn grant(now: Timestamp, n: u64) -> Grant {
    let request = AccessRequest::file(
        RequestId::from_random(n),
        NewRequest {
            requester: "alice@acme.example".into(),
            resource: "box".into(),
            role: "login".into(),
            duration: hourglass_core::Duration::from_mins(30),
            reason: "benchmark".into(),
            ticket: None,
            break_glass: false,
            renews: None,
        },
        Vec::new(),
        hourglass_core::Duration::from_mins(5),
        now,
    );
    Grant::start(GrantId::from_random(n), &request, "ssh", now)
}

fn client_key() -> anyhow::Result<PrivateKey> {
    PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519).map_err(|e| anyhow::anyhow!("a client key: {e}"))
}

/// The provider's issue, `runs` times (after a tenth as many to warm up).
pub fn in_process(runs: usize) -> anyhow::Result<Summary> {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let provider = runtime.block_on(async {
        let store = hourglass_broker::store::Store::open_sqlite(&dir.path().join("hourglass.db")).await?;
        let ca = hourglass_broker::keys::Ed25519Key::generate()?;
        let record = hourglass_broker::provider::SharedRecord::new(store, "ssh/revocations");
        SshProvider::open(&ca, record, &dir.path().join("ssh")).await.map_err(anyhow::Error::msg)
    })?;
    let toml = "[workflows.w]\napprovals = [{ group = \"g\", count = 1 }]\n\
                [resources.box]\nprovider = \"ssh\"\nworkflow = \"w\"\nsettings = { host = \"box.example\" }\n\
                [resources.box.roles.login]\nsettings = { principals = [\"deploy\"] }\n";
    let policy = hourglass_policy::Policy::from_sources(vec![("hourglass.toml".into(), toml.into())])
        .map_err(|e| anyhow::anyhow!("the benchmark's policy: {e}"))?;
    let resource = &policy.resources["box"];
    let role = &resource.roles["login"];
    let key = client_key()?;
    let material = ClientMaterial {
        postgres_scram_verifier: None,
        ssh_public_key: Some(key.public_key().to_openssh().map_err(|e| anyhow::anyhow!("{e}"))?),
    };
    let now = Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc());
    let mut samples = Vec::with_capacity(runs);
    for n in 0..(runs + runs / 10) {
        let grant = grant(now, n as u64);
        let input = IssueInput { grant: &grant, resource, role, now, material: Some(&material), ticket: None };
        let started = Instant::now();
        runtime.block_on(provider.issue(input)).map_err(|e| anyhow::anyhow!("issue: {e}"))?;
        if n >= runs / 10 {
            samples.push(started.elapsed());
        }
    }
    Ok(Summary::of(&mut samples))
}

/// `ssh-keygen -s CA -I ID -n deploy -V +30m key.pub`, `runs` times.
pub fn ssh_keygen(runs: usize) -> anyhow::Result<Summary> {
    let dir = tempfile::tempdir()?;
    let ca = client_key()?;
    let ca_path = dir.path().join("ca");
    std::fs::write(&ca_path, ca.to_openssh(LineEnding::LF).map_err(|e| anyhow::anyhow!("{e}"))?.as_bytes())?;
    set_private(&ca_path)?;
    let key_path = dir.path().join("key.pub");
    let mut samples: Vec<Duration> = Vec::with_capacity(runs);
    for n in 0..runs {
        std::fs::write(&key_path, client_key()?.public_key().to_openssh().map_err(|e| anyhow::anyhow!("{e}"))?)?;
        let started = Instant::now();
        let output = Command::new("ssh-keygen")
            .arg("-q")
            .arg("-s")
            .arg(&ca_path)
            .args(["-I", &format!("grant-{n}"), "-n", "deploy", "-V", "+30m", "-z", &(n + 1).to_string()])
            .arg(&key_path)
            .output()?;
        samples.push(started.elapsed());
        anyhow::ensure!(output.status.success(), "ssh-keygen -s: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(Summary::of(&mut samples))
}

fn set_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
