//! The tests behind each claim of the security page. A proof is named `AREA/FILE::TEST`, where
//! `it/` is the integration-test binary (`crates/clientflow/tests/it/`), `app/` the
//! application's sources (`crates/app/src/`) and `platform/` the platform's
//! (`crates/platform/src/`). The names are checked against the list of tests the build
//! extracts from those sources (`crates/clientflow/build.rs`): a renamed or deleted test fails
//! `security_page::every_claim_names_tests_that_exist` instead of leaving a dead claim.

/// (section of the page, the tests that prove what it says).
pub const PROOFS: &[(&str, &[&str])] = &[
    (
        "tls",
        &[
            "it/tls.rs::tls13_clients_connect_and_tls12_clients_are_refused",
            "it/tls.rs::plain_http_only_redirects_to_the_configured_https_address",
            "it/http.rs::every_kind_of_response_carries_the_security_headers",
        ],
    ),
    (
        "encryption",
        &[
            "platform/seal.rs::seals_and_binds_to_context",
            "platform/keys.rs::values_are_bound_to_scope_table_column_row_and_version",
            "it/privacy.rs::sealed_values_open_only_in_their_own_row_and_organization",
            "it/privacy.rs::rotation_keeps_every_value_readable_and_leaves_nothing_on_the_old_version",
            "it/privacy.rs::a_purged_organization_is_unreadable_in_a_backup_taken_before_the_purge",
            "it/work.rs::files_are_encrypted_at_rest_and_type_checked",
            "it/security_page.rs::reports_are_stored_sealed_and_the_reporter_is_acknowledged",
        ],
    ),
    (
        "isolation",
        &[
            "it/catalog.rs::every_tenant_table_is_isolated_by_construction",
            "it/isolation.rs::with_a_tenant_set_every_tenant_table_hides_and_refuses_the_other_tenant",
            "it/matrix.rs::the_cross_tenant_cross_role_matrix_over_every_route",
            "it/security_page.rs::the_page_is_generated_from_the_running_installation",
        ],
    ),
    (
        "backups",
        &[
            "it/backup.rs::a_point_in_time_restore_keeps_what_was_written_before_the_moment",
            "it/backup.rs::the_restore_drill_proves_the_backups_and_fails_loudly_on_a_damaged_one",
            "it/http.rs::metrics_report_the_backups",
        ],
    ),
    (
        "rate-limits",
        &[
            "it/ratelimit_http.rs::the_route_table_says_which_routes_are_limited_and_how",
            "it/ratelimit_http.rs::exact_counts_at_the_window_edges_through_http",
            "it/ratelimit_http.rs::two_server_processes_sharing_redis_enforce_one_budget",
            "it/ratelimit.rs::redis_keys_are_hashed_and_prefixed",
        ],
    ),
    (
        "bot-check",
        &[
            "it/botcheck_forms.rs::sign_up_refuses_missing_wrong_expired_and_replayed_proofs_of_work",
            "it/botcheck_forms.rs::sign_up_with_turnstile_success_failure_replay_wrong_hostname_and_timeout",
            "it/botcheck_forms.rs::the_contact_form_uses_turnstile_when_configured",
        ],
    ),
    (
        "audit",
        &[
            "it/audit.rs::the_log_is_append_only_for_every_role",
            "it/audit.rs::verify_detects_edited_deleted_reordered_inserted_and_rewritten_events",
            "it/audit.rs::a_forged_checkpoint_signature_is_detected",
            "it/audit.rs::quiet_chains_are_signed_by_the_sweep_and_on_demand_by_the_checkpoint_command",
        ],
    ),
    (
        "mail",
        &[
            "it/mail_delivery.rs::each_event_is_processed_once_and_bounces_and_complaints_suppress",
            "it/mail_delivery.rs::critical_mail_bypasses_suppression_and_other_mail_is_recorded_suppressed",
            "it/mail_delivery.rs::webhooks_that_do_not_verify_are_refused_with_no_side_effect",
            "it/mail_delivery.rs::one_click_unsubscribe_works_without_cookies_and_a_get_changes_nothing",
        ],
    ),
    (
        "sub-processors",
        &[
            "it/security_page.rs::the_pages_list_exactly_the_enabled_sub_processors",
            "app/disclosure/subprocessors.rs::with_nothing_configured_no_one_receives_anything",
        ],
    ),
    (
        "disclosure",
        &[
            "it/security_page.rs::security_txt_has_the_fields_rfc_9116_requires",
            "it/security_page.rs::the_report_form_refuses_missing_bot_checks_bursts_and_attachments",
            "it/security_page.rs::reports_are_stored_sealed_and_the_reporter_is_acknowledged",
        ],
    ),
];

/// The tests behind one section (none for an unknown section: the page test catches that).
pub fn proofs_of(section: &str) -> &'static [&'static str] {
    PROOFS.iter().find(|(s, _)| *s == section).map(|(_, p)| *p).unwrap_or(&[])
}

/// Where a proof's file is in the repository, and the command that runs it.
pub fn locate(proof: &str) -> Option<(String, String)> {
    let (file, test) = proof.split_once("::")?;
    if let Some(rel) = file.strip_prefix("it/") {
        let module = rel.strip_suffix(".rs")?.replace('/', "::");
        return Some((
            format!("crates/clientflow/tests/it/{rel}"),
            format!("cargo test -p clientflow --test it -- --exact {module}::{test}"),
        ));
    }
    let (package, dir, rel) = if let Some(rel) = file.strip_prefix("app/") {
        ("clientflow-app", "crates/app/src", rel)
    } else {
        ("clientflow-platform", "crates/platform/src", file.strip_prefix("platform/")?)
    };
    let module = rel.strip_suffix(".rs")?.trim_end_matches("/mod").replace('/', "::");
    Some((format!("{dir}/{rel}"), format!("cargo test -p {package} --lib -- --exact {module}::tests::{test}")))
}
