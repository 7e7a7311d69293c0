//! Report-formatter plugins: begin, batches of outcomes, finish.

use std::sync::Arc;

use wasmtime::component::HasSelf;
use wasmtime::Store;

use super::{arm, describe, HostState, LoadedPlugin, PluginError, FORMATTER_FUEL};
use crate::report::{Formatter, Outcome, OutcomeKind, ReportSummary};

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "report-formatter" });
}

use bindings::ferry::plugin::{host, types as wt};
use bindings::{ReportFormatter, ReportFormatterPre};

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        HostState::log(self, level as u8, &message);
    }
}

impl wt::Host for HostState {}

/// A formatter plugin ready to instantiate.
pub struct FormatterPlugin {
    loaded: LoadedPlugin,
    pre: ReportFormatterPre<HostState>,
    config: Vec<(String, String)>,
}

impl FormatterPlugin {
    pub fn new(
        loaded: LoadedPlugin,
        config: Vec<(String, String)>,
    ) -> Result<Arc<Self>, PluginError> {
        let pre = loaded.link("report-formatter", |linker| {
            ReportFormatter::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
        })?;
        let pre = ReportFormatterPre::new(pre).map_err(|e| loaded.invalid(e))?;
        Ok(Arc::new(FormatterPlugin {
            loaded,
            pre,
            config,
        }))
    }

    /// A configured instance (one per report).
    pub fn instance(self: &Arc<Self>) -> Result<FormatterInstance, PluginError> {
        let mut store = self.loaded.new_store(FORMATTER_FUEL);
        let name = self.loaded.name.to_string();
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            PluginError::Failed(
                name.clone(),
                format!("could not start: {}", describe(&e, &store)),
            )
        })?;
        arm(&mut store, FORMATTER_FUEL);
        match bindings
            .ferry_plugin_formatter()
            .call_configure(&mut store, &self.config)
        {
            Ok(Ok(())) => Ok(FormatterInstance {
                name,
                store,
                bindings,
            }),
            Ok(Err(msg)) => Err(PluginError::Configure(msg, name)),
            Err(e) => Err(PluginError::Configure(describe(&e, &store), name)),
        }
    }
}

/// One report being formatted by a plugin.
pub struct FormatterInstance {
    name: String,
    store: Store<HostState>,
    bindings: ReportFormatter,
}

impl FormatterInstance {
    /// Runs one guest call with fresh fuel; traps and guest errors become
    /// messages naming the plugin.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&ReportFormatter, &mut Store<HostState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, String> {
        arm(&mut self.store, FORMATTER_FUEL);
        match f(&self.bindings, &mut self.store) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(format!("plugin {} reported an error: {msg}", self.name)),
            Err(e) => Err(format!(
                "plugin {} {}",
                self.name,
                describe(&e, &self.store)
            )),
        }
    }
}

impl Formatter for FormatterInstance {
    fn is_plugin(&self) -> bool {
        true
    }

    fn content_type(&mut self) -> Result<String, String> {
        self.call(|b, s| b.ferry_plugin_formatter().call_content_type(s).map(Ok))
    }

    fn file_extension(&mut self) -> Result<String, String> {
        self.call(|b, s| b.ferry_plugin_formatter().call_file_extension(s).map(Ok))
    }

    fn begin(&mut self, r: &ReportSummary) -> Result<(), String> {
        let t = |d: Option<chrono::DateTime<chrono::Utc>>| d.map(|d| d.to_rfc3339());
        let summary = wt::RunSummary {
            job_id: r.job_id.clone(),
            source: r.source.clone(),
            destination: r.destination.clone(),
            mode: r.mode.clone(),
            state: r.state.clone(),
            attempts: r.attempts,
            submitted_at: t(r.submitted_at),
            started_at: t(r.started_at),
            ended_at: t(r.ended_at),
            listed: r.listed,
            copied: r.copied,
            copied_bytes: r.copied_bytes,
            skipped: r.skipped,
            failed: r.failed,
            skipped_by_reason: r.skipped_by_reason.clone(),
        };
        self.call(|b, s| b.ferry_plugin_formatter().call_begin(s, &summary))
    }

    fn add(&mut self, batch: &[Outcome]) -> Result<(), String> {
        let batch: Vec<wt::Outcome> = batch
            .iter()
            .map(|o| wt::Outcome {
                name: o.name.clone(),
                kind: match o.kind {
                    OutcomeKind::Copied => wt::OutcomeKind::Copied,
                    OutcomeKind::Skipped => wt::OutcomeKind::Skipped,
                    OutcomeKind::Failed => wt::OutcomeKind::Failed,
                },
                bytes: o.bytes,
                at: o.at.to_rfc3339(),
                offset_ms: o.offset_ms,
                detail: o.detail.clone(),
                attempt: o.attempt,
            })
            .collect();
        self.call(|b, s| b.ferry_plugin_formatter().call_add_outcomes(s, &batch))
    }

    fn finish(&mut self) -> Result<String, String> {
        self.call(|b, s| b.ferry_plugin_formatter().call_finish(s))
    }
}
