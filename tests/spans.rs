//! SPEC §6: enter and exit run inside `tracing` spans naming the manager
//! (and, for exit, the outcome). Checked with a subscriber that records,
//! for every event, the span it was emitted in.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use async_contextlib::{AsyncContextManager, Outcome, with_scope};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Span name and fields, recorded at creation.
#[derive(Clone, Debug)]
struct Fields(String);

#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<(String, String)>>>);

struct Recorder(Record);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut text = String::new();
        attrs.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                text.push_str(&format!("{}={:?} ", field.name(), value));
            },
        );
        let span = ctx.span(id).expect("new span");
        span.extensions_mut().insert(Fields(format!(
            "{} {}",
            attrs.metadata().name(),
            text.trim()
        )));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut message = String::new();
        event.record(
            &mut |_: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                message.push_str(&format!("{value:?}"));
            },
        );
        let span = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<Fields>().map(|f| f.0.clone()))
            .unwrap_or_default();
        self.0.0.lock().unwrap().push((message, span));
    }
}

struct Noisy;

impl AsyncContextManager for Noisy {
    type Value<'a> = ();
    type Error = Infallible;

    async fn enter(&mut self) -> Result<(), Infallible> {
        tracing::info!("in enter");
        Ok(())
    }

    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        tracing::info!("in exit");
        Ok(())
    }

    fn name(&self) -> &'static str {
        "noisy"
    }
}

#[test]
fn enter_and_exit_run_inside_spans_naming_the_manager() {
    let record = Record::default();
    let subscriber = Registry::default().with(Recorder(record.clone()));
    tracing::subscriber::with_default(subscriber, || {
        futures::executor::block_on(async {
            with_scope!(Noisy => {
                tracing::info!("in block");
            });
        });
    });
    let events = record.0.lock().unwrap().clone();
    assert_eq!(
        events,
        vec![
            (
                "in enter".to_string(),
                "enter manager=\"noisy\"".to_string()
            ),
            ("in block".to_string(), String::new()),
            (
                "in exit".to_string(),
                "exit manager=\"noisy\" outcome=\"success\"".to_string()
            ),
        ]
    );
}
