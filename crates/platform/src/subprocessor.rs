//! What a third-party service that ClientFlow hands data to says about itself: the entry each
//! adapter contributes to the sub-processor registry (`disclosure::subprocessors` in the
//! application), from which the security page, `/legal/subprocessors` and the DPA template are
//! generated. The adapter decides `enabled` from the configuration it is built from, so the pages
//! list exactly the services this installation talks to.

/// One sub-processor as its adapter describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubProcessor {
    /// A stable identifier (`resend`, `redis`…), used as the HTML anchor and in tests.
    pub id: &'static str,
    /// The provider's name as a customer knows it.
    pub name: &'static str,
    /// Whether this installation's configuration turns the adapter on.
    pub enabled: bool,
    /// The setting that turns it on (shown when it is off, so an operator knows where to look).
    pub setting: &'static str,
    /// What the service is used for.
    pub purpose: &'static str,
    /// The data it receives, one item each (nothing else leaves the process toward it).
    pub receives: &'static [&'static str],
    /// Where it processes the data.
    pub region: String,
}
