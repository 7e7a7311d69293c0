//! Plugin checks and report formatters: what needs the compiled-plugin
//! cache of a state dir but not its log, so `ferry plugin check` and
//! `ferry report` work while a daemon holds the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::EngineError;
use crate::plugin::{
    self, FormatterInstance, FormatterPlugin, LoadedPlugin, PluginHost, PolicyPlugin,
};
use crate::report::{self, Formatter, ReportSummary};
use crate::store::BlobMeta;

/// Plugins loaded through one state dir's compiled-plugin cache.
pub struct PluginTools {
    cache: PathBuf,
}

impl PluginTools {
    pub fn for_state_dir(dir: &Path) -> Self {
        PluginTools {
            cache: dir.join("plugin-cache"),
        }
    }

    pub(crate) fn host(&self) -> Result<Arc<PluginHost>, EngineError> {
        Ok(PluginHost::get(Some(&self.cache))?)
    }

    /// Loads a formatter plugin with its configuration.
    pub fn formatter_plugin(
        &self,
        path: &Path,
        config: Vec<(String, String)>,
    ) -> Result<FormatterInstance, EngineError> {
        let loaded = self.host()?.load(path)?;
        Ok(FormatterPlugin::new(loaded, config)?.instance()?)
    }

    /// Loads any plugin (for `ferry plugin check`).
    pub fn load_plugin(&self, path: &Path) -> Result<LoadedPlugin, EngineError> {
        Ok(self.host()?.load(path)?)
    }

    /// Configures a policy plugin and asks it about a sample blob (newer and
    /// bigger at the source): `ferry plugin check`. Returns its answer and
    /// whether it answers batches; a batch answer must equal `decide`'s.
    pub fn dry_run_policy(
        &self,
        loaded: LoadedPlugin,
        config: Vec<(String, String)>,
    ) -> Result<(String, bool), EngineError> {
        let plugin = PolicyPlugin::new(loaded, config)?;
        let mut inst = plugin.instance()?;
        let now = chrono::Utc::now();
        let src = BlobMeta {
            name: "example/photo.jpg".into(),
            size: 2048,
            modified: now,
            etag: "src".into(),
            md5: None,
            props: None,
            mode: None,
        };
        let dst = BlobMeta {
            size: 1024,
            modified: now - chrono::Duration::hours(1),
            etag: "dst".into(),
            ..src.clone()
        };
        let ctx = plugin::JobContext {
            job_id: "dry-run".into(),
            attempt: 1,
            source: "source".into(),
            destination: "destination".into(),
        };
        let show = |d: plugin::PluginDecision| match d {
            plugin::PluginDecision::Overwrite(r) => format!("overwrite ({r})"),
            plugin::PluginDecision::Skip(r) => format!("skip ({r})"),
        };
        let single = show(inst.decide(&src, &dst, &ctx)?);
        if !plugin.batches() {
            return Ok((single, false));
        }
        let name = plugin.name().to_string();
        let failed = |why: String| plugin::PluginError::Failed(name.clone(), why);
        let batch = plugin
            .decide_batch(&[(&src, &dst)], &ctx)
            .map_err(|why| failed(format!("failed in decide-batch: {why}")))?;
        let batch = batch.into_iter().map(show).collect::<Vec<_>>().join(", ");
        if batch != single {
            return Err(failed(format!(
                "answered {batch} in decide-batch but {single} in decide: a batch answer must equal decide's"
            ))
            .into());
        }
        Ok((single, true))
    }

    /// Configures a formatter plugin and formats a small sample report.
    pub fn dry_run_formatter(
        &self,
        loaded: LoadedPlugin,
        config: Vec<(String, String)>,
    ) -> Result<(String, String, usize), EngineError> {
        let mut f = FormatterPlugin::new(loaded, config)?.instance()?;
        let fail =
            |e: String| EngineError::Plugin(plugin::PluginError::Report(format!("dry run: {e}")));
        let now = chrono::Utc::now();
        let summary = ReportSummary {
            job_id: "dry-run".into(),
            source: "source".into(),
            destination: "destination".into(),
            mode: "incremental".into(),
            state: "completed-with-failures".into(),
            attempts: 1,
            submitted_at: Some(now),
            started_at: Some(now),
            ended_at: Some(now),
            listed: 3,
            copied: 1,
            copied_bytes: 10,
            skipped: 1,
            failed: 1,
            skipped_by_reason: vec![("not-newer".into(), 1)],
        };
        let outcome = |name: &str, kind, detail: &str| report::Outcome {
            name: name.into(),
            kind,
            bytes: 10,
            at: now,
            offset_ms: 5,
            detail: detail.into(),
            attempt: 1,
        };
        let ctype = f.content_type().map_err(fail)?;
        let ext = f.file_extension().map_err(fail)?;
        f.begin(&summary).map_err(fail)?;
        f.add(&[
            outcome("a.txt", report::OutcomeKind::Copied, ""),
            outcome("b.txt", report::OutcomeKind::Skipped, "not-newer"),
            outcome("c<&>.txt", report::OutcomeKind::Failed, "[io] disk full"),
        ])
        .map_err(fail)?;
        let text = f.finish().map_err(fail)?;
        Ok((ctype, ext, text.len()))
    }
}
