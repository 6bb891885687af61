//! IAM: a role's inline policies, the role itself, and role ARNs.

use percent_encoding::percent_decode_str;

use crate::credentials::Credentials;
use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::query::{QueryClient, Xml};

/// An IAM client (IAM is global: one endpoint, signed for the partition's
/// home region).
#[derive(Clone, Debug)]
pub struct Iam {
    query: QueryClient,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub arn: String,
    /// `AROA…`, the prefix of an assumed session's `aws:userid`.
    pub role_id: String,
    pub max_session_duration: u32,
}

/// A parsed role ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleArn {
    pub partition: String,
    pub account: String,
    /// `/` or `/path/to/`, as IAM writes paths.
    pub path: String,
    pub name: String,
}

/// Parses `arn:PARTITION:iam::ACCOUNT:role/NAME` or `…:role/path/to/NAME`,
/// refusing anything else (a user ARN, an assumed-role ARN, a bad account
/// id or name) with a message saying what a role ARN looks like.
pub fn parse_role_arn(arn: &str) -> Result<RoleArn> {
    let invalid = |why| Error::InvalidRoleArn { arn: arn.to_owned(), why };
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not an arn (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE)"));
    };
    if partition != "aws"
        && !partition
            .strip_prefix("aws-")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
    {
        return Err(invalid("unknown partition"));
    }
    if service != "iam" {
        return Err(invalid("not an iam arn"));
    }
    if !region.is_empty() {
        return Err(invalid("iam arns have no region"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("the account id is not 12 digits"));
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(invalid("not a role"));
    };
    let (path, name) = match path_and_name.rsplit_once('/') {
        Some((path, name)) => (format!("/{path}/"), name),
        None => ("/".to_owned(), path_and_name),
    };
    // IAM paths: printable ASCII between slashes, no empty segment.
    if path.len() > 512 || path.contains("//") || !path.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(invalid("the role path is malformed"));
    }
    if name.is_empty() {
        return Err(invalid("the role name is empty"));
    }
    if name.len() > 64 {
        return Err(invalid("the role name is longer than 64 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)) {
        return Err(invalid("role names use only letters, digits and _+=,.@-"));
    }
    Ok(RoleArn { partition: partition.to_owned(), account: account.to_owned(), path, name: name.to_owned() })
}

impl Iam {
    pub fn new(http: reqwest::Client, endpoints: Endpoints) -> Iam {
        Iam {
            query: QueryClient {
                http,
                endpoint: endpoints.iam,
                service: "iam",
                region: endpoints.iam_region,
                version: "2010-05-08",
            },
        }
    }

    /// Creates or replaces an inline policy.
    pub async fn put_role_policy(
        &self,
        caller: &Credentials,
        role_name: &str,
        policy_name: &str,
        document: &str,
    ) -> Result<()> {
        const ACTION: &str = "PutRolePolicy";
        let mut form = self.query.form(ACTION);
        form.add("RoleName", role_name).add("PolicyName", policy_name).add("PolicyDocument", document);
        self.query.call(ACTION, &form, Some(caller)).await?;
        Ok(())
    }

    /// The inline policy's document; `None` when IAM says NoSuchEntity,
    /// which it also says when the role itself does not exist.
    pub async fn get_role_policy(
        &self,
        caller: &Credentials,
        role_name: &str,
        policy_name: &str,
    ) -> Result<Option<String>> {
        const ACTION: &str = "GetRolePolicy";
        let mut form = self.query.form(ACTION);
        form.add("RoleName", role_name).add("PolicyName", policy_name);
        match self.query.call(ACTION, &form, Some(caller)).await {
            Ok(xml) => parse_policy_document(ACTION, &xml).map(Some),
            Err(error) if error.code() == Some("NoSuchEntity") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Whether there was a policy to delete: `false` on NoSuchEntity, so
    /// revoking twice is not an error.
    pub async fn delete_role_policy(&self, caller: &Credentials, role_name: &str, policy_name: &str) -> Result<bool> {
        const ACTION: &str = "DeleteRolePolicy";
        let mut form = self.query.form(ACTION);
        form.add("RoleName", role_name).add("PolicyName", policy_name);
        match self.query.call(ACTION, &form, Some(caller)).await {
            Ok(_) => Ok(true),
            Err(error) if error.code() == Some("NoSuchEntity") => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// All inline policy names, following IAM's pagination.
    pub async fn list_role_policies(&self, caller: &Credentials, role_name: &str) -> Result<Vec<String>> {
        const ACTION: &str = "ListRolePolicies";
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut form = self.query.form(ACTION);
            form.add("RoleName", role_name);
            if let Some(marker) = &marker {
                form.add("Marker", marker);
            }
            let xml = self.query.call(ACTION, &form, Some(caller)).await?;
            let page = parse_policy_names(&xml);
            names.extend(page.names);
            match page.next_marker {
                Some(next) => marker = Some(next),
                None => return Ok(names),
            }
        }
    }

    pub async fn get_role(&self, caller: &Credentials, role_name: &str) -> Result<Role> {
        const ACTION: &str = "GetRole";
        let mut form = self.query.form(ACTION);
        form.add("RoleName", role_name);
        let xml = self.query.call(ACTION, &form, Some(caller)).await?;
        parse_role(ACTION, &xml)
    }
}

/// IAM returns policy documents URL-encoded inside the XML.
fn parse_policy_document(action: &'static str, xml: &Xml) -> Result<String> {
    let encoded = xml.require(action, "GetRolePolicyResult/PolicyDocument")?;
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|document| document.into_owned())
        .map_err(|_| Error::Response { action, detail: "the policy document is not utf-8 once decoded".into() })
}

struct PolicyNamesPage {
    names: Vec<String>,
    next_marker: Option<String>,
}

fn parse_policy_names(xml: &Xml) -> PolicyNamesPage {
    let truncated = xml.get("ListRolePoliciesResult/IsTruncated") == Some("true");
    PolicyNamesPage {
        names: xml.all("ListRolePoliciesResult/PolicyNames/member").map(str::to_owned).collect(),
        next_marker: xml.get("ListRolePoliciesResult/Marker").filter(|m| truncated && !m.is_empty()).map(str::to_owned),
    }
}

fn parse_role(action: &'static str, xml: &Xml) -> Result<Role> {
    let max_session_duration = match xml.get("GetRoleResult/Role/MaxSessionDuration") {
        Some(seconds) => seconds
            .parse()
            .map_err(|_| Error::Response { action, detail: format!("bad MaxSessionDuration {seconds:?}") })?,
        // IAM's default when a role predates the setting.
        None => 3600,
    };
    Ok(Role {
        arn: xml.require(action, "GetRoleResult/Role/Arn")?.to_owned(),
        role_id: xml.require(action, "GetRoleResult/Role/RoleId")?.to_owned(),
        max_session_duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_parsed_or_refused_with_a_reason() {
        let ok = |arn: &str, path: &str, name: &str, why: &str| {
            let parsed = parse_role_arn(arn).unwrap_or_else(|e| panic!("{arn}: {why}: {e}"));
            assert_eq!((parsed.path.as_str(), parsed.name.as_str()), (path, name), "{why}");
            assert_eq!(parsed.account, "123456789012");
        };
        ok("arn:aws:iam::123456789012:role/operator", "/", "operator", "plain role");
        ok("arn:aws:iam::123456789012:role/team/ops/operator", "/team/ops/", "operator", "role with a path");
        ok(
            "arn:aws-cn:iam::123456789012:role/x.y@z+1=2,3-4_5",
            "/",
            "x.y@z+1=2,3-4_5",
            "china partition, every allowed punctuation",
        );
        ok("arn:aws-us-gov:iam::123456789012:role/r", "/", "r", "govcloud partition");
        ok(
            &format!("arn:aws:iam::123456789012:role/{}", "n".repeat(64)),
            "/",
            &"n".repeat(64),
            "64 characters is the limit",
        );

        for (arn, why) in [
            ("arn:aws:iam::123456789012:user/alice", "a user is not a role"),
            ("arn:aws:sts::123456789012:assumed-role/operator/s", "an assumed-role session is not a role"),
            ("arn:aws:iam::12345678901:role/operator", "account ids are 12 digits"),
            ("arn:aws:iam::12345678901x:role/operator", "account ids are digits"),
            ("arn:aws:iam::123456789012:role/", "the name is empty"),
            ("arn:aws:iam::123456789012:role/path/", "the name after a path is empty"),
            ("arn:aws:iam::123456789012:role//operator", "empty path segment"),
            ("arn:aws:iam:us-east-1:123456789012:role/operator", "iam arns have no region"),
            ("arn:aws:iam::123456789012:role/oper ator", "spaces are not allowed in names"),
            ("arn:aws:iam::123456789012:role/opérateur", "names are ascii"),
            ("arn:gcp:iam::123456789012:role/operator", "not an aws partition"),
            ("operator", "a bare name is not an arn"),
        ] {
            let error = parse_role_arn(arn).expect_err(why);
            assert!(
                error.to_string().contains("a role arn looks like arn:aws:iam::123456789012:role/NAME"),
                "{why}: {error}"
            );
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
        assert!(parse_role_arn(&long).unwrap_err().to_string().contains("longer than 64"));
    }

    #[test]
    fn policy_document_is_percent_decoded() {
        // As IAM (and moto) send it: the JSON URL-encoded inside the XML.
        let body = r#"<GetRolePolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><GetRolePolicyResult><RoleName>operator</RoleName><PolicyName>p1</PolicyName><PolicyDocument>%7B%22Version%22%3A%20%222012-10-17%22%2C%20%22Statement%22%3A%20%5B%7B%22Effect%22%3A%20%22Allow%22%2C%20%22Action%22%3A%20%22s3%3AGetObject%22%2C%20%22Resource%22%3A%20%22arn%3Aaws%3As3%3A%3A%3Ab/a%20b%2Bc%26d%22%7D%5D%7D</PolicyDocument></GetRolePolicyResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetRolePolicyResponse>"#;
        let document = parse_policy_document("GetRolePolicy", &Xml::parse(body).unwrap()).unwrap();
        assert_eq!(
            document,
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/a b+c&d"}]}"#
        );
    }

    #[test]
    fn policy_names_page_gives_the_marker_only_when_truncated() {
        let page = |truncated: &str| {
            format!(
                "<ListRolePoliciesResponse><ListRolePoliciesResult><PolicyNames><member>a</member><member>b</member></PolicyNames><IsTruncated>{truncated}</IsTruncated><Marker>m2</Marker></ListRolePoliciesResult></ListRolePoliciesResponse>"
            )
        };
        let more = parse_policy_names(&Xml::parse(&page("true")).unwrap());
        assert_eq!(more.names, ["a", "b"]);
        assert_eq!(more.next_marker.as_deref(), Some("m2"));
        assert_eq!(parse_policy_names(&Xml::parse(&page("false")).unwrap()).next_marker, None);
        let empty = "<ListRolePoliciesResponse><ListRolePoliciesResult><PolicyNames/><IsTruncated>false</IsTruncated></ListRolePoliciesResult></ListRolePoliciesResponse>";
        assert!(parse_policy_names(&Xml::parse(empty).unwrap()).names.is_empty());
    }

    #[test]
    fn role_is_parsed_from_get_role() {
        let body = "<GetRoleResponse><GetRoleResult><Role><Path>/</Path><RoleName>operator</RoleName><RoleId>AROAEXAMPLE</RoleId><Arn>arn:aws:iam::123456789012:role/operator</Arn><MaxSessionDuration>43200</MaxSessionDuration><RoleLastUsed/><Tags><member><Key>Arn</Key><Value>decoy</Value></member></Tags></Role></GetRoleResult></GetRoleResponse>";
        let role = parse_role("GetRole", &Xml::parse(body).unwrap()).unwrap();
        assert_eq!(
            role,
            Role {
                arn: "arn:aws:iam::123456789012:role/operator".into(),
                role_id: "AROAEXAMPLE".into(),
                max_session_duration: 43200,
            }
        );
    }
}
