//! Alert flags, and Reloader's `ALERT_*` environment variables under `--stakater-compat`: resolved once at
//! start-up into [`AlertSettings`]. The webhook URL is a credential (Slack and Teams put their token in
//! it): it is never logged, printed in `--help` or echoed in an error; only its host is.

use hyper::Uri;

use crate::alerts::message::Sink;

/// The alert flags (flattened into the command line), checked as they are parsed.
#[derive(Debug, Clone)]
pub struct AlertFlags(Flags);

#[derive(clap::Args, Clone)]
pub struct Flags {
    /// Send an alert to this webhook after each roll, and each roll that failed for good (http or https).
    #[arg(
        long,
        env = "HASHROLL_ALERT_WEBHOOK_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub alert_webhook_url: Option<String>,

    /// The webhook's kind, which shapes the alert's body: slack, teams, gchat, json, raw (plain text).
    #[arg(
        long,
        env = "HASHROLL_ALERT_SINK",
        value_enum,
        ignore_case = true,
        default_value = "json"
    )]
    pub alert_sink: Sink,

    /// Put in front of every alert's message, and in the `json` body (a cluster's name, say).
    #[arg(long, env = "HASHROLL_ALERT_ADDITIONAL_INFO")]
    pub alert_additional_info: Option<String>,
}

// Never print the URL, even in a debug dump of the flags.
impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags")
            .field(
                "alert_webhook_url",
                &self.alert_webhook_url.as_ref().map(|_| "<redacted>"),
            )
            .field("alert_sink", &self.alert_sink)
            .field("alert_additional_info", &self.alert_additional_info)
            .finish()
    }
}

impl std::ops::Deref for AlertFlags {
    type Target = Flags;
    fn deref(&self) -> &Flags {
        &self.0
    }
}

impl clap::FromArgMatches for AlertFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flags = Flags::from_arg_matches(m)?;
        flags.check()?;
        Ok(AlertFlags(flags))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)?;
        self.0.check()
    }
}

impl clap::Args for AlertFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Flags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Flags::augment_args_for_update(cmd)
    }
}

impl Flags {
    /// An unusable URL exits 2 like any invalid flag, with a message that does not repeat it (clap's own
    /// value errors would).
    fn check(&self) -> Result<(), clap::Error> {
        match self.alert_webhook_url.as_deref().map(parse_url) {
            Some(Err(problem)) => Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--alert-webhook-url: {problem}"),
            )),
            _ => Ok(()),
        }
    }
}

/// Where and how alerts are sent.
#[derive(Clone)]
pub struct AlertSettings {
    pub url: Uri,
    pub sink: Sink,
    pub additional_info: Option<String>,
    /// What set them, for the start-up log line: a flag or Reloader's variables.
    pub origin: &'static str,
}

impl AlertSettings {
    /// The webhook's host, the only part of its URL hashroll logs.
    pub fn host(&self) -> &str {
        self.url.host().unwrap_or_default()
    }
}

/// A webhook URL hashroll can post to: absolute, http or https, with a host. The problem never quotes the
/// URL.
pub fn parse_url(s: &str) -> Result<Uri, &'static str> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|_| "not a valid URL (the value is not repeated here: it may hold a token)")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the URL must start with https:// or http://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    Ok(uri)
}

/// The alert settings from the flags, or else, under `--stakater-compat`, from Reloader's variables read
/// through `env`: `ALERT_ON_RELOAD` exactly `true` turns alerts on, `ALERT_WEBHOOK_URL` says where,
/// `ALERT_SINK` how ([`Sink::from_stakater`]), `ALERT_ADDITIONAL_INFO` what goes in front. The second value
/// is a warning to log: Reloader's variables asking for alerts it cannot send.
pub fn resolve(
    flags: &Flags,
    stakater_compat: bool,
    env: impl Fn(&str) -> Option<String>,
) -> (Option<AlertSettings>, Option<String>) {
    let nonblank = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let Some(url) = &flags.alert_webhook_url {
        // Checked while parsing the flags.
        let settings = parse_url(url).ok().map(|url| AlertSettings {
            url,
            sink: flags.alert_sink,
            additional_info: nonblank(flags.alert_additional_info.clone()),
            origin: "--alert-webhook-url",
        });
        return (settings, None);
    }
    if !stakater_compat || env("ALERT_ON_RELOAD").as_deref() != Some("true") {
        return (None, None);
    }
    let Some(url) = nonblank(env("ALERT_WEBHOOK_URL")) else {
        let warning = "ALERT_ON_RELOAD is true but ALERT_WEBHOOK_URL is not set: no alerts";
        return (None, Some(warning.into()));
    };
    match parse_url(&url) {
        Ok(url) => (
            Some(AlertSettings {
                url,
                sink: Sink::from_stakater(env("ALERT_SINK").as_deref()),
                additional_info: nonblank(env("ALERT_ADDITIONAL_INFO")),
                origin: "ALERT_ON_RELOAD",
            }),
            None,
        ),
        Err(problem) => (
            None,
            Some(format!("ALERT_WEBHOOK_URL: {problem}: no alerts")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        alerts: AlertFlags,
    }

    fn flags(args: &[&str]) -> Result<Flags, String> {
        let argv = std::iter::once("hashroll").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.alerts.0)
            .map_err(|e| e.to_string())
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    const RELOADER: &[(&str, &str)] = &[
        ("ALERT_ON_RELOAD", "true"),
        (
            "ALERT_WEBHOOK_URL",
            " https://hooks.slack.com/services/T0/B0/tok ",
        ),
        ("ALERT_SINK", "slack"),
        ("ALERT_ADDITIONAL_INFO", " prod-eu "),
    ];

    #[test]
    fn a_bad_url_is_refused_without_being_repeated() {
        for (url, problem) in [
            ("ftp://x/tok3n", "must start with https:// or http://"),
            ("hooks.example/tok3n", "not a valid URL"),
            ("hooks.example:443", "must start with https:// or http://"),
            ("https://exa mple/tok3n", "not a valid URL"),
        ] {
            let err = flags(&["--alert-webhook-url", url]).unwrap_err();
            assert!(
                err.contains("--alert-webhook-url") && err.contains(problem),
                "{url}: {err}"
            );
            assert!(!err.contains("tok3n"), "the URL is never echoed: {err}");
        }
        let f = flags(&[
            "--alert-webhook-url",
            "https://x/tok3n",
            "--alert-sink",
            "Teams",
        ])
        .unwrap();
        assert_eq!(f.alert_sink, Sink::Teams);
        assert!(!format!("{f:?}").contains("tok3n"));
    }

    #[test]
    fn the_flag_wins_and_its_sink_defaults_to_json() {
        let f = flags(&["--alert-webhook-url", "http://alerts.local:9000/in"]).unwrap();
        let (s, warning) = resolve(&f, true, env(RELOADER));
        let s = s.unwrap();
        assert_eq!(
            (s.sink, s.host(), s.origin),
            (Sink::Json, "alerts.local", "--alert-webhook-url")
        );
        assert_eq!((s.additional_info, warning), (None, None));
    }

    #[test]
    fn reloader_variables_work_as_in_reloader_under_stakater_compat() {
        let none = flags(&[]).unwrap();
        let (s, warning) = resolve(&none, true, env(RELOADER));
        let s = s.unwrap();
        assert_eq!(
            (s.sink, s.host(), s.additional_info.as_deref(), warning),
            (Sink::Slack, "hooks.slack.com", Some("prod-eu"), None)
        );
        // Off without the compat, without ALERT_ON_RELOAD exactly "true".
        assert!(resolve(&none, false, env(RELOADER)).0.is_none());
        for on in ["True", "1", "yes"] {
            let mut vars = RELOADER.to_vec();
            vars[0].1 = on;
            assert!(resolve(&none, true, env(&vars)).0.is_none(), "{on}");
        }
        // Any other sink (Reloader's `webhook`, or none) is plain text.
        let (s, _) = resolve(&none, true, env(&RELOADER[..2]));
        assert_eq!(s.unwrap().sink, Sink::Raw);
    }

    #[test]
    fn reloader_variables_that_cannot_work_say_so() {
        let none = flags(&[]).unwrap();
        let (s, warning) = resolve(&none, true, env(&RELOADER[..1]));
        assert!(s.is_none());
        assert!(warning.unwrap().contains("ALERT_WEBHOOK_URL is not set"));
        let (s, warning) = resolve(
            &none,
            true,
            env(&[
                ("ALERT_ON_RELOAD", "true"),
                ("ALERT_WEBHOOK_URL", "slack-tok3n"),
            ]),
        );
        assert!(s.is_none());
        let warning = warning.unwrap();
        assert!(
            warning.starts_with("ALERT_WEBHOOK_URL: ") && !warning.contains("tok3n"),
            "{warning}"
        );
    }
}
