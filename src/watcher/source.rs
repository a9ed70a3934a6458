//! Where reloads come from: notify (through notify-debouncer-full) watching directories, its
//! callback reduced to forwarding each debounced batch of changed paths into the reload loop's
//! channel. It never blocks (an unbounded send) and never decides anything: which paths matter
//! is the loop's business.

use super::Message;
use crate::error::Error;
use notify::EventKind;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Starts the debounced watcher; directories are added later with `watch`.
pub(super) fn start(
    window: Duration,
    forward: Sender<Message>,
) -> Result<Debouncer<notify::RecommendedWatcher, RecommendedCache>, Error> {
    new_debouncer(window, None, move |result: DebounceEventResult| {
        let message = match result {
            Ok(events) => Message::Changed(
                events
                    .into_iter()
                    .filter(|event| !matches!(event.kind, EventKind::Access(_)))
                    .flat_map(|event| event.event.paths)
                    .collect(),
            ),
            Err(errors) => Message::WatchError(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        let _ = forward.send(message);
    })
    .map_err(|e| Error::host("starting the file watcher", e))
}
