//! The password rules of NIST SP 800-63B-4: length in code points, no composition rules, no
//! truncation, a blocklist of common passwords. The domain never sees a hash; it judges facts
//! about a candidate that the caller measured with [`PasswordFacts::measure`].

mod blocklist;
mod facts;
mod policy;

pub use facts::{PasswordFacts, SERVICE_NAME, normalize};
pub use policy::{HashParams, PasswordPolicy, PasswordRejection};
