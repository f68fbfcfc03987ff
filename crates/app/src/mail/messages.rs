//! The text of every message ClientFlow sends. Plain text, no tracking, links to the
//! configured public URL only.

use super::category::Category;
use super::outbox::OutgoingMail;

fn mail(to: &str, subject: &str, body: String) -> OutgoingMail {
    OutgoingMail {
        to: to.to_string(),
        subject: subject.to_string(),
        body: format!("{body}\n\n-- \nClientFlow\n"),
        category: Category::Critical,
        org_name: None,
    }
}

pub fn verify_email(to: &str, link: &str) -> OutgoingMail {
    mail(
        to,
        "Confirm your email address",
        format!(
            "Welcome to ClientFlow.\n\nConfirm your email address to finish creating your account:\n\n{link}\n\n\
             The link works once and expires in 24 hours. If you didn't sign up, ignore this message."
        ),
    )
}

pub fn signup_attempt_on_existing(to: &str, base: &str) -> OutgoingMail {
    mail(
        to,
        "Someone tried to sign up with your email address",
        format!(
            "Someone tried to create a ClientFlow account with this email address, which already has one.\n\n\
             If it was you, sign in at {base}/login, or reset your password at {base}/forgot-password.\n\
             If it wasn't you, you don't need to do anything."
        ),
    )
}

pub fn reset_password(to: &str, link: &str) -> OutgoingMail {
    mail(
        to,
        "Reset your password",
        format!(
            "Someone (hopefully you) asked to reset the password of your ClientFlow account.\n\n\
             Choose a new password here:\n\n{link}\n\n\
             The link works once and expires in one hour. Resetting your password signs you out everywhere;\n\
             if you use two-factor authentication you will still need your code.\n\
             If you didn't ask for this, ignore this message: your password stays as it is."
        ),
    )
}

pub fn password_changed(to: &str) -> OutgoingMail {
    mail(
        to,
        "Your password was changed",
        "The password of your ClientFlow account was just changed, and your other sessions were signed out.\n\n\
         If this wasn't you, reset your password now and contact your administrator."
            .to_string(),
    )
}

pub fn lockout(to: &str, minutes: i64, base: &str) -> OutgoingMail {
    mail(
        to,
        "Sign-in attempts to your account were paused",
        format!(
            "There were several failed attempts to sign in to your ClientFlow account, so password sign-in\n\
             from new devices is paused for {minutes} minutes. Devices you have signed in from before are not affected.\n\n\
             If this wasn't you, someone may be guessing your password: consider changing it, and turn on\n\
             two-factor authentication at {base}/account/security."
        ),
    )
}

pub fn second_factor_lockout(to: &str, minutes: i64) -> OutgoingMail {
    mail(
        to,
        "Two-factor attempts to your account were paused",
        format!(
            "Someone entered your password correctly and then several wrong two-factor codes.\n\
             Two-factor sign-in is paused for {minutes} minutes.\n\n\
             If this wasn't you, your password is known to someone else: change it now."
        ),
    )
}

pub fn recovery_code_used(to: &str, remaining: i64, base: &str) -> OutgoingMail {
    mail(
        to,
        "A recovery code was used to sign in",
        format!(
            "One of your ClientFlow recovery codes was just used to sign in. {remaining} unused codes remain.\n\n\
             If this wasn't you, change your password and generate new recovery codes at {base}/account/security."
        ),
    )
}

pub fn two_factor_changed(to: &str, enabled: bool) -> OutgoingMail {
    let (subject, what) = if enabled {
        ("Two-factor authentication is on", "turned on")
    } else {
        ("Two-factor authentication was turned off", "turned off")
    };
    mail(
        to,
        subject,
        format!(
            "Two-factor authentication was just {what} for your ClientFlow account, and your other sessions were signed out.\n\n\
             If this wasn't you, reset your password now and ask the administrator of your ClientFlow installation\n\
             to reset your two-factor authentication."
        ),
    )
}

pub fn two_factor_replaced(to: &str) -> OutgoingMail {
    mail(
        to,
        "Your two-factor authenticator was replaced",
        "The authenticator app of your ClientFlow account was just replaced by a new one, new recovery codes were\n\
         issued, and your other sessions were signed out. Codes from the old app and the old recovery codes no longer work.\n\n\
         If this wasn't you, reset your password now and ask the administrator of your ClientFlow installation\n\
         to reset your two-factor authentication."
            .to_string(),
    )
}

pub fn recovery_codes_regenerated(to: &str) -> OutgoingMail {
    mail(
        to,
        "New recovery codes were generated",
        "New two-factor recovery codes were just generated for your ClientFlow account; the old ones no longer work,\n\
         and your other sessions were signed out.\n\n\
         If this wasn't you, reset your password now."
            .to_string(),
    )
}

pub fn two_factor_reset_by_operator(to: &str) -> OutgoingMail {
    mail(
        to,
        "Your two-factor authentication was reset",
        "The administrator of your ClientFlow installation removed the two-factor authentication of your account,\n\
         with its recovery codes, and signed out all of your sessions. You can sign in with your password alone\n\
         now; turn two-factor authentication on again on your account's security page.\n\n\
         If you didn't ask for this, contact your administrator and change your password now."
            .to_string(),
    )
}

pub fn confirm_new_email(to: &str, link: &str) -> OutgoingMail {
    mail(
        to,
        "Confirm your new email address",
        format!(
            "Confirm that this is the new email address of your ClientFlow account:\n\n{link}\n\n\
             The link works once and expires in 24 hours. If you didn't ask for this, ignore this message."
        ),
    )
}

pub fn email_change_requested(to: &str, new_email: &str) -> OutgoingMail {
    mail(
        to,
        "Your email address is being changed",
        format!(
            "Someone signed in to your ClientFlow account asked to change its email address to {new_email}.\n\
             The change happens when the new address is confirmed.\n\n\
             If this wasn't you, change your password now."
        ),
    )
}

pub fn email_changed(to: &str, new_email: &str) -> OutgoingMail {
    mail(
        to,
        "Your email address was changed",
        format!(
            "The email address of your ClientFlow account is now {new_email}, and all sessions were signed out.\n\n\
             If this wasn't you, contact your administrator."
        ),
    )
}

pub fn deliverability_check(to: &str, base: &str) -> OutgoingMail {
    mail(
        to,
        "Mail to your address is on again",
        format!(
            "Mail to this address had been stopped because earlier messages bounced. You turned it on again\n\
             from your account, and this message checks that mail arrives.\n\n\
             Nothing else to do. If this message bounces, mail stops again; your account page at\n\
             {base}/account/security says so."
        ),
    )
}

pub fn account_deletion_requested(to: &str, purge_on: &str, base: &str) -> OutgoingMail {
    mail(
        to,
        "Your account is scheduled for deletion",
        format!(
            "You asked to delete your ClientFlow account, and every session of it was signed out.\n\n\
             Until {purge_on} (UTC) you can change your mind: sign in at {base}/login and cancel the deletion.\n\
             After that date your account is deleted and can't be recovered: your sign-in details, second\n\
             factor, sessions, API keys and memberships go. What you wrote in organizations stays, shown as\n\
             written by \"Deleted user\".\n\n\
             If this wasn't you, sign in now, cancel the deletion and change your password."
        ),
    )
}

pub fn account_deletion_cancelled(to: &str) -> OutgoingMail {
    mail(
        to,
        "The deletion of your account was cancelled",
        "The deletion of your ClientFlow account was cancelled: nothing was deleted, and you can use your\n\
         account as before.\n\n\
         If this wasn't you, change your password now."
            .to_string(),
    )
}

pub fn account_deletion_postponed(to: &str, organizations: &[String]) -> OutgoingMail {
    mail(
        to,
        "The deletion of your account is postponed",
        format!(
            "Your ClientFlow account was due to be deleted, but you are now the last Owner of: {}.\n\n\
             An organization can't be left without an Owner, so the deletion waits. Make someone else Owner\n\
             of each of them (or delete them); we try again every day. You can still sign in and cancel the\n\
             deletion.",
            organizations.join(", ")
        ),
    )
}
