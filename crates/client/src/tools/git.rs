//! git's credential helper protocol (`gitcredentials(7)`): git runs
//! `hourglass git-credential get` and writes `key=value` lines (protocol,
//! host, path…) ending with a blank line; the helper answers `username=`
//! and `password=` lines, or nothing to let the next helper try.
//!
//! Which grant answers for a host: a token grant whose audience (the
//! token's `aud`, the resource's `audience` setting) is the git server's
//! URL, e.g. `https://git.acme.example`. The question's protocol and host
//! (with its port, if any) must match the audience's scheme and authority.
//! The answer is the grant owner's principal as the username and the token
//! as the password, with `password_expiry_utc` at the grant's deadline.
//! No broker change is needed: the git server verifies the token against
//! the broker's JWKS like any resource server.

use base64::Engine;
use hourglass_core::api::Credential;
use zeroize::Zeroizing;

use crate::agent::protocol::GitAnswer;

/// What git asks: the attributes the answer depends on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Question {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
}

/// Reads git's `key=value` lines; a blank line ends them. `url=` is split
/// into protocol, host and path as git itself does.
pub fn parse(input: &str) -> Question {
    let mut question = Question::default();
    for line in input.lines() {
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "protocol" => question.protocol = Some(value.to_owned()),
            "host" => question.host = Some(value.to_owned()),
            "path" => question.path = Some(value.to_owned()),
            "url" => {
                if let Some((scheme, rest)) = value.split_once("://") {
                    question.protocol = Some(scheme.to_owned());
                    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                    question.host = Some(host.to_owned());
                    if !path.is_empty() {
                        question.path = Some(path.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    question
}

/// The lines git reads back. Values with a newline or NUL cannot be said
/// in this protocol: then nothing is answered.
pub fn answer(answer: &GitAnswer) -> Option<Zeroizing<String>> {
    let bad = |value: &str| value.contains(['\n', '\0']);
    if bad(&answer.username) || bad(&answer.password) {
        return None;
    }
    Some(Zeroizing::new(format!(
        "username={}\npassword={}\npassword_expiry_utc={}\n",
        answer.username, answer.password, answer.expires
    )))
}

/// The audiences (`aud`) of a JWT, read without verifying it: the agent
/// only routes the token, the git server verifies it.
pub fn audiences(jwt: &str) -> Vec<String> {
    let Some(payload) = jwt.split('.').nth(1) else { return Vec::new() };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
        return Vec::new();
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Vec::new() };
    match &claims["aud"] {
        serde_json::Value::String(aud) => vec![aud.clone()],
        serde_json::Value::Array(list) => list.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// Whether `credential` answers for `protocol://host`.
pub fn serves(credential: &Credential, protocol: Option<&str>, host: &str) -> bool {
    if credential.provider != "token" {
        return false;
    }
    let Ok(token) = super::token(credential) else { return false };
    audiences(token).iter().any(|aud| {
        let Some((scheme, rest)) = aud.split_once("://") else { return false };
        let authority = rest.split('/').next().unwrap_or(rest);
        authority.eq_ignore_ascii_case(host) && protocol.is_none_or(|p| p.eq_ignore_ascii_case(scheme))
    })
}

#[cfg(test)]
mod tests {
    use hourglass_core::api::EnvVar;
    use hourglass_core::{GrantId, Timestamp};

    use super::*;

    fn jwt(aud: &str) -> String {
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!("{}.{}.sig", b64(r#"{"alg":"EdDSA"}"#), b64(&format!(r#"{{"aud":"{aud}","sub":"a"}}"#)))
    }

    fn credential(aud: &str) -> Credential {
        Credential {
            grant_id: GrantId::from_random(1),
            resource: "git".into(),
            role: "push".into(),
            provider: "token".into(),
            expires_at: Timestamp::from_unix_millis(0),
            valid_until: None,
            env: vec![EnvVar { name: "GIT_TOKEN".into(), value: jwt(aud), secret: true }],
            ssh_certificate: None,
            client_secret: None,
        }
    }

    #[test]
    fn gits_questions_are_read_up_to_the_blank_line() {
        let question = parse("protocol=https\nhost=git.acme.example:8443\npath=team/repo.git\n\nhost=ignored\n");
        assert_eq!(question.protocol.as_deref(), Some("https"));
        assert_eq!(question.host.as_deref(), Some("git.acme.example:8443"), "the port stays with the host");
        assert_eq!(question.path.as_deref(), Some("team/repo.git"));
        let from_url = parse("url=https://me@git.acme.example/team/repo.git\n");
        assert_eq!(from_url.host.as_deref(), Some("git.acme.example"), "url= is split, user dropped");
        assert_eq!(from_url.protocol.as_deref(), Some("https"));
    }

    #[test]
    fn a_token_answers_for_the_host_its_audience_names() {
        let credential = credential("https://git.acme.example");
        assert!(serves(&credential, Some("https"), "git.acme.example"), "scheme and host match");
        assert!(serves(&credential, Some("HTTPS"), "GIT.acme.example"), "case does not matter");
        assert!(!serves(&credential, Some("http"), "git.acme.example"), "another scheme");
        assert!(!serves(&credential, Some("https"), "git.other.example"), "another host");
        assert!(!serves(&credential, Some("https"), "git.acme.example:8443"), "another port");
    }

    #[test]
    fn answers_are_key_value_lines_and_refuse_newlines() {
        let good = GitAnswer {
            username: "alice@acme.example".into(),
            password: "eyJ.x.y".into(),
            expires: 1_800_000_000,
            grant: GrantId::from_random(2),
        };
        assert_eq!(
            answer(&good).expect("answered").as_str(),
            "username=alice@acme.example\npassword=eyJ.x.y\npassword_expiry_utc=1800000000\n",
            "git's attribute lines"
        );
        let mut bad = good.clone();
        bad.password = "a\nb".into();
        assert!(answer(&bad).is_none(), "a newline would inject attributes");
    }
}
