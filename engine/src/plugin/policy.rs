//! Overwrite-policy plugins: a pool of instances leased per call, so `decide` runs in
//! parallel; an instance that trapped is dropped and made again. A plugin
//! that exports `policy-batch` is asked a worker's batch of blobs per call.

use std::sync::{Arc, Mutex};

use wasmtime::component::{ComponentExportIndex, ComponentType, Func, HasSelf, Lower, TypedFunc};
use wasmtime::Store;

use super::{
    arm, describe, tidy, HostState, LoadedPlugin, PluginError, MAX_REASON_BYTES,
    POLICY_BATCH_INTERFACE, POLICY_FUEL, POLICY_INTERFACE,
};
use crate::store::BlobMeta;

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "overwrite-policy" });
}

use bindings::ferry::plugin::{host, types as wt};
use bindings::{OverwritePolicy, OverwritePolicyPre};

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        HostState::log(self, level as u8, &message);
    }
}

impl wt::Host for HostState {}

/// The answer of a policy plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginDecision {
    Overwrite(String),
    Skip(String),
}

/// What a policy is told about the job asking: the WIT record itself, so a
/// call lowers it without first copying its strings.
pub use bindings::ferry::plugin::types::JobContext;

/// `blob-info` lowered straight from a [`BlobMeta`]'s fields: the generated
/// record owns its strings, so each call first copied them on the host and
/// then again into the guest (host malloc/free was ~15% of a `decide`).
#[derive(ComponentType, Lower)]
#[component(record)]
struct BlobInfoRef<'a> {
    name: &'a str,
    size: u64,
    #[component(name = "last-modified-ns")]
    last_modified_ns: i64,
    etag: &'a str,
    #[component(name = "content-md5")]
    content_md5: Option<&'a [u8]>,
    #[component(name = "content-type")]
    content_type: Option<&'a str>,
    metadata: &'a [(String, String)],
}

/// `job-context`, borrowed likewise.
#[derive(ComponentType, Lower)]
#[component(record)]
struct JobContextRef<'a> {
    #[component(name = "job-id")]
    job_id: &'a str,
    attempt: u32,
    source: &'a str,
    destination: &'a str,
}

type DecideParams<'a> = (BlobInfoRef<'a>, BlobInfoRef<'a>, JobContextRef<'a>);
type BatchParams<'a> = (&'a [(BlobInfoRef<'a>, BlobInfoRef<'a>)], JobContextRef<'a>);

/// A configured, running instance, its `decide` export and its
/// `decide-batch` export if the plugin has one.
type Live = (Store<HostState>, OverwritePolicy, Func, Option<Func>);

/// A policy plugin ready to instantiate (shared by all workers).
pub struct PolicyPlugin {
    loaded: LoadedPlugin,
    pre: OverwritePolicyPre<HostState>,
    /// `ferry:plugin/policy#decide`, called through [`BlobInfoRef`]s.
    decide: ComponentExportIndex,
    /// `ferry:plugin/policy-batch#decide-batch`, if exported: one call per
    /// batch instead of per blob. Each call costs ~10 host-guest crossings
    /// whatever it carries (the parameter area, every string's `realloc`,
    /// the call), so the job context and the call itself are paid once per
    /// batch instead of once per blob.
    decide_batch: Option<ComponentExportIndex>,
    config: Vec<(String, String)>,
    /// Instances not in a call. Workers lease one per `decide` instead of
    /// owning one each: a run with 16 workers on 2 cores then makes about
    /// as many instances as calls ever overlap (2-3), not 16, and each
    /// stays warm in cache. Measured: half the plugin CPU of one instance
    /// per worker on a 10k-blob incremental run.
    idle: Mutex<Vec<Live>>,
}

impl PolicyPlugin {
    /// Checks the world and links the imports; a first instance is made and
    /// configured so a bad plugin or configuration fails before the job.
    pub fn new(
        loaded: LoadedPlugin,
        config: Vec<(String, String)>,
    ) -> Result<Arc<Self>, PluginError> {
        let pre = loaded.link("overwrite-policy", |linker| {
            OverwritePolicy::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
        })?;
        let pre = OverwritePolicyPre::new(pre).map_err(|e| loaded.invalid(e))?;
        let decide = loaded
            .export_index(POLICY_INTERFACE, "decide")
            .ok_or_else(|| loaded.invalid(wasmtime::Error::msg("no decide export")))?;
        let decide_batch = loaded.export_index(POLICY_BATCH_INTERFACE, "decide-batch");
        let plugin = Arc::new(PolicyPlugin {
            loaded,
            pre,
            decide,
            decide_batch,
            config,
            idle: Mutex::new(Vec::new()),
        });
        let first = plugin.start()?;
        // The borrowed records must match the WIT's: checked once here, so
        // each call may skip the check.
        first
            .2
            .typed::<DecideParams<'_>, (wt::Decision,)>(&first.0)
            .map_err(|e| plugin.loaded.invalid(e))?;
        if let Some(batch) = first.3 {
            batch
                .typed::<BatchParams<'_>, (Vec<wt::Decision>,)>(&first.0)
                .map_err(|e| plugin.loaded.invalid(e))?;
        }
        plugin.give_back(first);
        Ok(plugin)
    }

    /// Whether the plugin answers batches (`policy-batch`).
    pub fn batches(&self) -> bool {
        self.decide_batch.is_some()
    }

    pub fn name(&self) -> &str {
        &self.loaded.name
    }

    pub fn sha256(&self) -> &str {
        &self.loaded.sha256
    }

    /// A configured instance owned by its caller.
    pub fn instance(self: &Arc<Self>) -> Result<PolicyInstance, PluginError> {
        Ok(PolicyInstance {
            plugin: self.clone(),
            live: Some(self.start()?),
        })
    }

    /// Asks the plugin about a blob present at both ends, on an idle pooled
    /// instance (made when none is idle). An instance that trapped is
    /// dropped, not pooled.
    pub fn decide(
        &self,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        let mut live = self.lease()?;
        let decided = self.call(&mut live, src, dst, ctx);
        if decided.is_ok() {
            self.give_back(live);
        }
        decided
    }

    /// Asks about many blobs present at both ends on one leased instance:
    /// one `decide-batch` call if the plugin has it, else a `decide` each.
    /// One answer per pair, in order. A batch call that fails (a trap, or
    /// not one decision per pair) is asked again blob by blob on a fresh
    /// instance, so a failure is pinned on the blob that causes it.
    pub fn decide_all(
        &self,
        pairs: &[(&BlobMeta, &BlobMeta)],
        ctx: &JobContext,
    ) -> Vec<Result<PluginDecision, PluginError>> {
        if self.decide_batch.is_some() && !pairs.is_empty() {
            match self.decide_batch(pairs, ctx) {
                Ok(decided) => return decided.into_iter().map(Ok).collect(),
                Err(why) => tracing::warn!(
                    plugin = %self.loaded.name,
                    "decide-batch failed ({why}); asking blob by blob"
                ),
            }
        }
        // One instance for the whole batch, replaced only after a trap.
        let mut live = None;
        let mut out = Vec::with_capacity(pairs.len());
        for (src, dst) in pairs {
            let decided = live
                .take()
                .map_or_else(|| self.lease(), Ok)
                .and_then(|mut l| {
                    let decided = self.call(&mut l, src, dst, ctx);
                    if decided.is_ok() {
                        live = Some(l);
                    }
                    decided
                });
            out.push(decided);
        }
        if let Some(l) = live {
            self.give_back(l);
        }
        out
    }

    /// One `decide-batch` call, with no fallback; `Err` says why it failed
    /// (the instance is then dropped).
    pub fn decide_batch(
        &self,
        pairs: &[(&BlobMeta, &BlobMeta)],
        ctx: &JobContext,
    ) -> Result<Vec<PluginDecision>, String> {
        let mut live = self.lease().map_err(|e| e.to_string())?;
        let decided = self.call_batch(&mut live, pairs, ctx)?;
        self.give_back(live);
        Ok(decided)
    }

    /// An idle pooled instance, or a new one when none is idle.
    fn lease(&self) -> Result<Live, PluginError> {
        match self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            Some(live) => Ok(live),
            None => self.start(),
        }
    }

    fn give_back(&self, live: Live) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(live);
        }
    }

    /// Instantiates and configures.
    fn start(&self) -> Result<Live, PluginError> {
        let mut store = self.loaded.new_store(POLICY_FUEL);
        let name = self.loaded.name.to_string();
        let started = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let bindings = OverwritePolicy::new(&mut store, &instance)?;
                let decide = instance
                    .get_func(&mut store, self.decide)
                    .ok_or_else(|| wasmtime::Error::msg("no decide export"))?;
                let batch = self
                    .decide_batch
                    .and_then(|i| instance.get_func(&mut store, i));
                Ok((bindings, decide, batch))
            });
        let (bindings, decide, batch) = started.map_err(|e| {
            PluginError::Failed(
                name.clone(),
                format!("could not start: {}", describe(&e, &store)),
            )
        })?;
        arm(&mut store, POLICY_FUEL);
        match bindings
            .ferry_plugin_policy()
            .call_configure(&mut store, &self.config)
        {
            Ok(Ok(())) => Ok((store, bindings, decide, batch)),
            Ok(Err(msg)) => Err(PluginError::Configure(msg, name)),
            Err(e) => Err(PluginError::Configure(describe(&e, &store), name)),
        }
    }

    /// One `decide` call; `Err` means the instance trapped and is unusable.
    fn call(
        &self,
        (store, _, decide, _): &mut Live,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        arm(store, POLICY_FUEL);
        // SAFETY: `new` checked these parameter and result types against
        // the component's `decide` (every instance is of that component).
        let typed: TypedFunc<DecideParams<'_>, (wt::Decision,)> =
            unsafe { TypedFunc::new_unchecked(*decide) };
        match typed.call(&mut *store, (info(src), info(dst), context(ctx))) {
            Ok((d,)) => Ok(d.into()),
            Err(e) => Err(PluginError::Failed(
                self.loaded.name.to_string(),
                describe(&e, store),
            )),
        }
    }

    /// One `decide-batch` call; `Err` (why) means the instance is not to be
    /// trusted again. The fuel budget is the per-blob one times the batch.
    fn call_batch(
        &self,
        (store, _, _, batch): &mut Live,
        pairs: &[(&BlobMeta, &BlobMeta)],
        ctx: &JobContext,
    ) -> Result<Vec<PluginDecision>, String> {
        let Some(batch) = batch else {
            return Err("no decide-batch export".into());
        };
        arm(store, POLICY_FUEL.saturating_mul(pairs.len() as u64));
        let infos: Vec<_> = pairs.iter().map(|(s, d)| (info(s), info(d))).collect();
        // SAFETY: `new` checked these types against the component's
        // `decide-batch`, as for `decide`.
        let typed: TypedFunc<BatchParams<'_>, (Vec<wt::Decision>,)> =
            unsafe { TypedFunc::new_unchecked(*batch) };
        let (decided,) = typed
            .call(&mut *store, (&infos, context(ctx)))
            .map_err(|e| describe(&e, store))?;
        if decided.len() != pairs.len() {
            return Err(format!(
                "it returned {} decisions for {} blobs",
                decided.len(),
                pairs.len()
            ));
        }
        Ok(decided.into_iter().map(PluginDecision::from).collect())
    }
}

impl From<wt::Decision> for PluginDecision {
    fn from(d: wt::Decision) -> Self {
        match d {
            wt::Decision::Overwrite(r) => PluginDecision::Overwrite(tidy(&r, MAX_REASON_BYTES)),
            wt::Decision::Skip(r) => PluginDecision::Skip(tidy(&r, MAX_REASON_BYTES)),
        }
    }
}

fn context(ctx: &JobContext) -> JobContextRef<'_> {
    JobContextRef {
        job_id: &ctx.job_id,
        attempt: ctx.attempt,
        source: &ctx.source,
        destination: &ctx.destination,
    }
}

/// An instance owned by one caller (a dry run, a benchmark thread).
pub struct PolicyInstance {
    plugin: Arc<PolicyPlugin>,
    live: Option<Live>,
}

impl PolicyInstance {
    /// Asks the plugin about a blob present at both ends. After a trap the
    /// instance is dropped; the next call makes a fresh one.
    pub fn decide(
        &mut self,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.plugin.start()?,
        };
        let decided = self.plugin.call(&mut live, src, dst, ctx);
        if decided.is_ok() {
            self.live = Some(live);
        }
        decided
    }
}

fn info(m: &BlobMeta) -> BlobInfoRef<'_> {
    let props = m.props.as_deref();
    BlobInfoRef {
        name: &m.name,
        size: m.size,
        last_modified_ns: m.modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
        etag: &m.etag,
        content_md5: m.md5.as_ref().map(|d| d.as_slice()),
        content_type: props.and_then(|p| p.content_type.as_deref()),
        metadata: props.map_or(&[], |p| p.metadata.as_slice()),
    }
}
