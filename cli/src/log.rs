//! With `-v`, the store's and the S3 client's log events (each retried
//! request, for one) are printed to stderr as `debug: …` lines. Without it
//! no subscriber is installed and events cost nothing.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Prints one line per event: its message and other fields.
struct Lines;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        crate::say!("debug: {}", f.0);
    }
}

/// Installs the subscriber (once; a second call does nothing).
pub fn init() {
    let targets = Targets::new().with_target("object_store", Level::INFO).with_target("vault_store", Level::DEBUG);
    let _ = tracing_subscriber::registry().with(Lines.with_filter(targets)).try_init();
}
