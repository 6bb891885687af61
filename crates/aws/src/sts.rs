//! STS: AssumeRole, AssumeRoleWithWebIdentity, GetCallerIdentity.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::credentials::Credentials;
use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::query::{Form, QueryClient, Xml};

/// An STS client at one endpoint.
#[derive(Clone, Debug)]
pub struct Sts {
    query: QueryClient,
}

/// An AssumeRole request; `AssumeRole::new` fills in the common defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    pub role_session_name: String,
    pub duration_seconds: u32,
    /// An inline session policy (JSON): the session gets the intersection
    /// of it and the role's policies.
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    /// Session tags, as (key, value).
    pub tags: Vec<(String, String)>,
    pub transitive_tag_keys: Vec<String>,
    pub external_id: Option<String>,
    pub source_identity: Option<String>,
}

impl AssumeRole {
    /// One hour, no session policy, no tags.
    pub fn new(role_arn: impl Into<String>, role_session_name: impl Into<String>) -> AssumeRole {
        AssumeRole {
            role_arn: role_arn.into(),
            role_session_name: role_session_name.into(),
            duration_seconds: 3600,
            policy: None,
            policy_arns: Vec::new(),
            tags: Vec::new(),
            transitive_tag_keys: Vec::new(),
            external_id: None,
            source_identity: None,
        }
    }

    fn add_to(&self, form: &mut Form) {
        form.add("RoleArn", &self.role_arn)
            .add("RoleSessionName", &self.role_session_name)
            .add("DurationSeconds", &self.duration_seconds.to_string());
        if let Some(policy) = &self.policy {
            form.add("Policy", policy);
        }
        // Query-protocol lists are numbered from 1.
        for (n, arn) in self.policy_arns.iter().enumerate() {
            form.add(&format!("PolicyArns.member.{}.arn", n + 1), arn);
        }
        for (n, (key, value)) in self.tags.iter().enumerate() {
            form.add(&format!("Tags.member.{}.Key", n + 1), key).add(&format!("Tags.member.{}.Value", n + 1), value);
        }
        for (n, key) in self.transitive_tag_keys.iter().enumerate() {
            form.add(&format!("TransitiveTagKeys.member.{}", n + 1), key);
        }
        if let Some(external_id) = &self.external_id {
            form.add("ExternalId", external_id);
        }
        if let Some(source_identity) = &self.source_identity {
            form.add("SourceIdentity", source_identity);
        }
    }
}

/// A role session's credentials and identity.
#[derive(Clone, Debug)]
pub struct AssumedRole {
    pub credentials: Credentials,
    /// `AROA…:SESSION`, what policies see as `aws:userid`.
    pub assumed_role_id: String,
    /// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`.
    pub arn: String,
    /// How full the packed session policy and tags are, in percent of the
    /// limit; AWS refuses the call past 100.
    pub packed_policy_size: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// Whether `name` is a valid RoleSessionName: `[\w+=,.@-]{2,64}`.
pub fn session_name_is_valid(name: &str) -> bool {
    (2..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

impl Sts {
    pub fn new(http: reqwest::Client, endpoints: Endpoints) -> Sts {
        Sts {
            query: QueryClient {
                http,
                endpoint: endpoints.sts.clone(),
                service: "sts",
                region: endpoints.sts_region().to_owned(),
                version: "2011-06-15",
            },
        }
    }

    pub async fn assume_role(&self, caller: &Credentials, request: &AssumeRole) -> Result<AssumedRole> {
        const ACTION: &str = "AssumeRole";
        let mut form = self.query.form(ACTION);
        request.add_to(&mut form);
        let xml = self.query.call(ACTION, &form, Some(caller)).await?;
        parse_assumed_role(ACTION, &xml)
    }

    /// Unsigned: the web identity token is the proof of identity. The form
    /// body holds the token, so it is never logged.
    pub async fn assume_role_with_web_identity(
        &self,
        role_arn: &str,
        session_name: &str,
        token: &str,
        duration_seconds: Option<u32>,
    ) -> Result<AssumedRole> {
        const ACTION: &str = "AssumeRoleWithWebIdentity";
        let mut form = self.query.form(ACTION);
        form.add("RoleArn", role_arn).add("RoleSessionName", session_name).add("WebIdentityToken", token);
        if let Some(duration) = duration_seconds {
            form.add("DurationSeconds", &duration.to_string());
        }
        let xml = self.query.call(ACTION, &form, None).await?;
        parse_assumed_role(ACTION, &xml)
    }

    pub async fn get_caller_identity(&self, caller: &Credentials) -> Result<CallerIdentity> {
        const ACTION: &str = "GetCallerIdentity";
        let xml = self.query.call(ACTION, &self.query.form(ACTION), Some(caller)).await?;
        parse_caller_identity(ACTION, &xml)
    }
}

fn parse_assumed_role(action: &'static str, xml: &Xml) -> Result<AssumedRole> {
    let expiration = xml.require(action, "Credentials/Expiration")?;
    let expiration = OffsetDateTime::parse(expiration, &Rfc3339)
        .map_err(|e| Error::Response { action, detail: format!("bad Expiration {expiration:?}: {e}") })?;
    let packed_policy_size = match xml.get("PackedPolicySize") {
        Some(size) => Some(
            size.parse().map_err(|_| Error::Response { action, detail: format!("bad PackedPolicySize {size:?}") })?,
        ),
        None => None,
    };
    Ok(AssumedRole {
        credentials: Credentials {
            access_key_id: xml.require(action, "Credentials/AccessKeyId")?.to_owned(),
            secret_access_key: Zeroizing::new(xml.require(action, "Credentials/SecretAccessKey")?.to_owned()),
            session_token: Some(Zeroizing::new(xml.require(action, "Credentials/SessionToken")?.to_owned())),
            expiration: Some(expiration),
        },
        assumed_role_id: xml.require(action, "AssumedRoleUser/AssumedRoleId")?.to_owned(),
        arn: xml.require(action, "AssumedRoleUser/Arn")?.to_owned(),
        packed_policy_size,
    })
}

fn parse_caller_identity(action: &'static str, xml: &Xml) -> Result<CallerIdentity> {
    Ok(CallerIdentity {
        account: xml.require(action, "GetCallerIdentityResult/Account")?.to_owned(),
        arn: xml.require(action, "GetCallerIdentityResult/Arn")?.to_owned(),
        user_id: xml.require(action, "GetCallerIdentityResult/UserId")?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const ASSUME_ROLE: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>Alice</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764</SessionToken>
      <Expiration>2019-11-09T13:34:41Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#;

    #[test]
    fn assume_role_response_gives_credentials_and_session_identity() {
        let assumed = parse_assumed_role("AssumeRole", &Xml::parse(ASSUME_ROLE).unwrap()).unwrap();
        assert_eq!(assumed.credentials.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(assumed.credentials.secret_access_key.as_str(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
        assert_eq!(
            assumed.credentials.session_token.as_deref().map(String::as_str),
            Some("AQoDYXdzEPT//////////wEXAMPLEtc764")
        );
        assert_eq!(assumed.credentials.expiration, Some(datetime!(2019-11-09 13:34:41 UTC)));
        assert_eq!(assumed.assumed_role_id, "ARO123EXAMPLE123:TestAR");
        assert_eq!(assumed.arn, "arn:aws:sts::123456789012:assumed-role/demo/TestAR");
        assert_eq!(assumed.packed_policy_size, Some(6));
    }

    #[test]
    fn assume_role_response_without_credentials_is_an_error_naming_the_element() {
        let xml = Xml::parse("<AssumeRoleResponse><AssumeRoleResult/></AssumeRoleResponse>").unwrap();
        let error = parse_assumed_role("AssumeRole", &xml).unwrap_err();
        assert_eq!(
            error.to_string(),
            "aws AssumeRole answered with an unreadable response: no Credentials/Expiration element"
        );
    }

    #[test]
    fn caller_identity_response_is_parsed() {
        let body = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><UserId>AIDACKCEVSQ6C2EXAMPLE</UserId><Account>123456789012</Account><Arn>arn:aws:iam::123456789012:user/Alice</Arn></GetCallerIdentityResult><ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata></GetCallerIdentityResponse>"#;
        let identity = parse_caller_identity("GetCallerIdentity", &Xml::parse(body).unwrap()).unwrap();
        assert_eq!(
            identity,
            CallerIdentity {
                account: "123456789012".into(),
                arn: "arn:aws:iam::123456789012:user/Alice".into(),
                user_id: "AIDACKCEVSQ6C2EXAMPLE".into(),
            }
        );
    }

    #[test]
    fn assume_role_form_numbers_lists_from_one() {
        let mut request = AssumeRole::new("arn:aws:iam::123456789012:role/operator", "alice");
        request.duration_seconds = 900;
        request.policy_arns = vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()];
        request.tags = vec![("grant".into(), "g 1".into()), ("user".into(), "alice".into())];
        request.transitive_tag_keys = vec!["grant".into()];
        request.external_id = Some("x".into());
        let mut form = Form::new("AssumeRole", "2011-06-15");
        request.add_to(&mut form);
        let expected = "Action=AssumeRole&Version=2011-06-15\
            &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Foperator&RoleSessionName=alice\
            &DurationSeconds=900&PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FReadOnlyAccess\
            &Tags.member.1.Key=grant&Tags.member.1.Value=g+1&Tags.member.2.Key=user&Tags.member.2.Value=alice\
            &TransitiveTagKeys.member.1=grant&ExternalId=x";
        assert_eq!(form.as_str(), expected);
    }

    #[test]
    fn session_names_follow_the_sts_pattern() {
        for (name, valid, why) in [
            ("alice@example.com", true, "@ and . are allowed"),
            ("a", false, "at least two characters"),
            ("ab", true, "two is enough"),
            (&"x".repeat(64), true, "64 is the limit"),
            (&"x".repeat(65), false, "over 64"),
            ("alice smith", false, "no spaces"),
            ("grant/1", false, "no slashes"),
            ("a_b+c=d,e-f", true, "the rest of the allowed punctuation"),
        ] {
            assert_eq!(session_name_is_valid(name), valid, "{name:?}: {why}");
        }
    }
}
