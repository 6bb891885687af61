//! Which environment variable names a credential may set. A credential's
//! variables reach shells, IDEs and every program they start: a name that
//! changes how programs run (a preloaded library, an interpreter's startup
//! file, a proxy, a CA bundle, another SSH agent) would let whoever writes
//! a credential (an exec hook, a compromised broker) run code as the
//! engineer or read their traffic. The broker refuses such names from exec
//! hooks; clients drop them from any credential they receive. One list,
//! for both.

/// Names refused outright, with the kind of harm.
const REFUSED: &[(&str, &str)] = &[
    // The shell itself.
    ("PATH", SHELL),
    ("HOME", SHELL),
    ("SHELL", SHELL),
    ("USER", SHELL),
    ("LOGNAME", SHELL),
    ("IFS", SHELL),
    ("ENV", SHELL),
    ("BASH_ENV", SHELL),
    ("SHELLOPTS", SHELL),
    ("BASHOPTS", SHELL),
    ("CDPATH", SHELL),
    ("GLOBIGNORE", SHELL),
    ("PROMPT_COMMAND", SHELL),
    ("PS0", SHELL),
    ("PS1", SHELL),
    ("PS2", SHELL),
    ("PS3", SHELL),
    ("PS4", SHELL),
    ("ZDOTDIR", SHELL),
    ("HISTFILE", SHELL),
    ("TERM", SHELL),
    ("TMPDIR", SHELL),
    ("EDITOR", CODE),
    ("VISUAL", CODE),
    ("PAGER", CODE),
    ("MANPAGER", CODE),
    ("BROWSER", CODE),
    ("LESSOPEN", CODE),
    ("LESSCLOSE", CODE),
    // Interpreters' and runtimes' startup code and search paths.
    ("NODE_OPTIONS", CODE),
    ("NODE_PATH", CODE),
    ("PYTHONSTARTUP", CODE),
    ("PYTHONPATH", CODE),
    ("PYTHONHOME", CODE),
    ("PYTHONINSPECT", CODE),
    ("PERL5OPT", CODE),
    ("PERL5LIB", CODE),
    ("PERLLIB", CODE),
    ("RUBYOPT", CODE),
    ("RUBYLIB", CODE),
    ("JAVA_TOOL_OPTIONS", CODE),
    ("_JAVA_OPTIONS", CODE),
    ("JDK_JAVA_OPTIONS", CODE),
    ("CLASSPATH", CODE),
    ("GCONV_PATH", CODE),
    ("LOCPATH", CODE),
    ("NLSPATH", CODE),
    // Tools' configuration, which can name programs to run.
    ("GIT_SSH", CODE),
    ("GIT_SSH_COMMAND", CODE),
    ("GIT_ASKPASS", CODE),
    ("GIT_EXEC_PATH", CODE),
    ("GIT_EDITOR", CODE),
    ("GIT_PAGER", CODE),
    ("GIT_PROXY_COMMAND", CODE),
    ("GIT_TEMPLATE_DIR", CODE),
    ("SSH_ASKPASS", CODE),
    ("SSH_AUTH_SOCK", CODE),
    ("KUBECONFIG", CODE),
    ("AWS_CONFIG_FILE", CODE),
    ("AWS_SHARED_CREDENTIALS_FILE", CODE),
    ("DOCKER_CONFIG", CODE),
    ("XDG_CONFIG_HOME", CODE),
    ("XDG_CONFIG_DIRS", CODE),
    ("XDG_DATA_HOME", CODE),
    ("XDG_DATA_DIRS", CODE),
    ("XDG_RUNTIME_DIR", CODE),
    ("DBUS_SESSION_BUS_ADDRESS", CODE),
    ("DISPLAY", CODE),
    ("WAYLAND_DISPLAY", CODE),
    // Which certificates are trusted.
    ("SSL_CERT_FILE", TRUST),
    ("SSL_CERT_DIR", TRUST),
    ("CURL_CA_BUNDLE", TRUST),
    ("REQUESTS_CA_BUNDLE", TRUST),
    ("NODE_EXTRA_CA_CERTS", TRUST),
    ("NODE_TLS_REJECT_UNAUTHORIZED", TRUST),
    ("GIT_SSL_CAINFO", TRUST),
    ("GIT_SSL_CAPATH", TRUST),
    ("GIT_SSL_NO_VERIFY", TRUST),
    ("AWS_CA_BUNDLE", TRUST),
    ("PGSSLROOTCERT", TRUST),
];

/// Names refused by how they start.
const REFUSED_PREFIXES: &[(&str, &str)] =
    &[("LD_", CODE), ("DYLD_", CODE), ("BASH_FUNC_", CODE), ("GIT_CONFIG", CODE), ("HOURGLASS_", OURS)];

const SHELL: &str = "it changes how the shell runs";
const CODE: &str = "it can make programs run other code";
const TRUST: &str = "it changes which certificates are trusted";
const PROXY: &str = "it sends network traffic through someone else";
const OURS: &str = "Hourglass uses it itself";

/// Why a credential may not set the variable `name`; None when it may.
pub fn refused_credential_name(name: &str) -> Option<&'static str> {
    if let Some((_, why)) = REFUSED.iter().find(|(refused, _)| *refused == name) {
        return Some(why);
    }
    if let Some((_, why)) = REFUSED_PREFIXES.iter().find(|(prefix, _)| name.starts_with(prefix)) {
        return Some(why);
    }
    // HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, FTP_PROXY…
    if name == "PROXY" || name.ends_with("_PROXY") {
        return Some(PROXY);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_change_how_programs_run_are_refused() {
        for name in [
            "NODE_OPTIONS",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "GIT_SSH_COMMAND",
            "GIT_CONFIG_COUNT",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "SSL_CERT_FILE",
            "ZDOTDIR",
            "SSH_AUTH_SOCK",
            "BASH_ENV",
            "PROMPT_COMMAND",
            "BASH_FUNC_ls%%",
            "HOURGLASS_TOKEN",
            "PATH",
        ] {
            assert!(refused_credential_name(name).is_some(), "{name} is refused");
        }
    }

    #[test]
    fn credentials_keep_their_own_names() {
        for name in [
            "ORDERS_API_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "PGHOST",
            "PGUSER",
            "PGPASSWORD",
            "CLOUD_REGION",
            "PROXY_TOKEN",
        ] {
            assert_eq!(refused_credential_name(name), None, "{name} is a credential's");
        }
    }
}
