//! The sub-processor registry: every adapter that can hand data to a third party contributes its
//! entry ([`SubProcessor`]: name, whether configuration turned it on, purpose, the data it
//! receives, region), and the security page, `/legal/subprocessors` and the DPA template are
//! generated from this one list. An adapter added later (billing, error reporting, object
//! storage) adds its line to [`registry`]; nothing else needs to know.

pub use crate::platform::subprocessor::SubProcessor;

use crate::config::Config;

/// Every sub-processor an installation can have, enabled or not, in the order pages show them.
pub fn registry(config: &Config) -> Vec<SubProcessor> {
    let [resend, smtp] = crate::mail::transport::sub_processors(&config.mail);
    vec![
        resend,
        smtp,
        crate::abuse::limits::sub_processor(&config.redis),
        crate::abuse::botcheck::sub_processor(&config.bot_check),
        crate::backup::sub_processor(config),
        crate::billing::sub_processor(config),
        crate::platform::error_reports::sub_processor(&config.sentry),
        crate::work::files::sub_processor(&config.files),
    ]
}

/// The ones this installation's configuration turns on.
pub fn enabled(config: &Config) -> Vec<SubProcessor> {
    registry(config).into_iter().filter(|s| s.enabled).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_nothing_configured_no_one_receives_anything() {
        let config = Config::default();
        assert!(enabled(&config).is_empty(), "{:?}", enabled(&config));
        let all = registry(&config);
        let mut ids: Vec<&str> = all.iter().map(|s| s.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "ids are unique");
        for s in &all {
            assert!(!s.receives.is_empty() && !s.purpose.is_empty() && !s.setting.is_empty(), "{s:?}");
        }
    }
}
