"""Sets up moto's IAM for the AWS tests (tests/src/moto.rs), in the calls
moto lets through before it checks signatures (INITIAL_NO_AUTH_ACTION_COUNT):
the broker's user and its key, the roles it assumes. Prints the broker's
keys as JSON. Every call here counts: keep SETUP_CALLS in moto.rs equal to
the number of calls made.
"""
import json
import sys

import boto3

url = sys.argv[1]
account = "123456789012"
session = boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1")
iam = session.client("iam", endpoint_url=url)


def document(statements):
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


broker = f"arn:aws:iam::{account}:user/hourglass-broker"
iam.create_user(UserName="hourglass-broker")
iam.put_user_policy(
    UserName="hourglass-broker",
    PolicyName="broker",
    PolicyDocument=document([
        {"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies", "iam:GetRole"], "Resource": "*"},
    ]),
)
key = iam.create_access_key(UserName="hourglass-broker")["AccessKey"]
trust_broker = document([{"Effect": "Allow", "Principal": {"AWS": broker}, "Action": ["sts:AssumeRole", "sts:TagSession"]}])
trust_other = document([{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:user/someone-else"}, "Action": "sts:AssumeRole"}])
# What a grant's session may do: list buckets (the call the tests make with
# the keys) and say who it is.
works = document([{"Effect": "Allow", "Action": ["s3:*", "sts:GetCallerIdentity"], "Resource": "*"}])
iam.create_role(RoleName="operator", AssumeRolePolicyDocument=trust_broker, MaxSessionDuration=3600)
iam.put_role_policy(RoleName="operator", PolicyName="work", PolicyDocument=works)
iam.create_role(RoleName="locked", AssumeRolePolicyDocument=trust_other)
print(json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"], "account": account}))
