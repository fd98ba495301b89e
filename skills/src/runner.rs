//! Running verified skills in a wasmtime sandbox.
//!
//! One [`wasmtime::Engine`] per runner, with the pooling instance allocator
//! (sized by [`RunnerConfig`]) and fuel metering. Fuel was chosen over epoch
//! interruption because it is deterministic: a skill stops at the same
//! instruction on every machine and load, `SkillOutput::fuel_used` is
//! reproducible, and no ticker thread is needed. Its cost is a counter update
//! per basic block (see `benches/invoke.rs`). Fuel does not count time spent
//! inside host calls; those are bounded by `max_host_calls` and by the gate.
//!
//! Each module is compiled once, at [`SkillRunner::load`]; each invocation gets
//! a fresh `Store` and instance (no state survives between invocations), with
//! a memory cap enforced by a resource limiter: a `memory.grow` past the cap
//! traps and the invocation ends with [`SkillError::MemoryCap`].

use std::collections::HashMap;

use wasmtime::{
    Caller, Config, Engine, Extern, ExternType, InstanceAllocationStrategy, InstancePre, Linker,
    Module, PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc, ValType,
};

use crate::abi;
use crate::error::SkillError;
use crate::host::{DenyAll, SkillHost};
use crate::manifest::{MAX_MEMORY_BYTES, Manifest};
use crate::supply::VerifiedSkill;

/// The most table elements a skill's table may hold.
pub const MAX_TABLE_ELEMENTS: usize = 10_000;

/// Sizes of the runner's instance pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerConfig {
    /// How many skill instances may run at once (pool slots).
    pub max_instances: u32,
    /// The largest memory cap any skill may have, in bytes (each pool slot's size).
    pub max_memory_bytes: u64,
}

impl Default for RunnerConfig {
    /// 16 concurrent instances of up to 64 MiB.
    fn default() -> Self {
        Self {
            max_instances: 16,
            max_memory_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What an invocation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillOutput {
    /// The bytes the entry point returned.
    pub bytes: Vec<u8>,
    /// Fuel spent (instantiation, input copy and the call).
    pub fuel_used: u64,
    /// How many `mxp.call_tool` calls reached the host.
    pub host_calls: u32,
}

struct Loaded {
    manifest: Manifest,
    pre: InstancePre<Run>,
}

/// The per-invocation state a store holds.
struct Run {
    host: Box<dyn SkillHost>,
    tools: Vec<String>,
    max_host_calls: u32,
    max_output_bytes: u64,
    memory_cap: u64,
    host_calls: u32,
    memory_cap_hit: bool,
    /// Why a host function stopped the skill, if one did.
    abort: Option<SkillError>,
}

impl ResourceLimiter for Run {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if u64::try_from(desired).map_or(true, |d| d > self.memory_cap) {
            self.memory_cap_hit = true;
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached",
                self.memory_cap
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Why a host function or a step of an invocation stopped.
enum Stop {
    Skill(SkillError),
    Wasm(wasmtime::Error),
}

impl From<SkillError> for Stop {
    fn from(e: SkillError) -> Self {
        Self::Skill(e)
    }
}

fn bad_abi(reason: impl Into<String>) -> SkillError {
    SkillError::BadAbi {
        reason: reason.into(),
    }
}

fn engine_error(e: &wasmtime::Error) -> SkillError {
    SkillError::Engine {
        reason: e.to_string(),
    }
}

/// Runs verified skills. Share it (`&self` methods) across threads.
pub struct SkillRunner {
    engine: Engine,
    linker: Linker<Run>,
    config: RunnerConfig,
    skills: HashMap<String, Loaded>,
}

impl std::fmt::Debug for SkillRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.skills.keys().collect();
        names.sort();
        f.debug_struct("SkillRunner")
            .field("config", &self.config)
            .field("skills", &names)
            .finish()
    }
}

/// The wasmtime configuration a runner uses (also used by the benchmark's
/// bare-wasmtime baseline, so both measure the same engine).
///
/// # Errors
///
/// [`SkillError::MemoryAboveRunner`] if `max_memory_bytes` is above
/// [`MAX_MEMORY_BYTES`].
pub fn engine_config(config: RunnerConfig) -> Result<Config, SkillError> {
    let cap = usize::try_from(config.max_memory_bytes)
        .ok()
        .filter(|_| config.max_memory_bytes <= MAX_MEMORY_BYTES)
        .ok_or(SkillError::MemoryAboveRunner {
            limit: config.max_memory_bytes,
            runner: MAX_MEMORY_BYTES,
        })?;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(config.max_instances)
        .total_memories(config.max_instances)
        .total_tables(config.max_instances)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_memory_size(cap);
    let mut wasm = Config::new();
    wasm.consume_fuel(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(wasm)
}

impl SkillRunner {
    /// A runner with no skills loaded.
    ///
    /// # Errors
    ///
    /// [`SkillError::Engine`] if wasmtime cannot set up the engine (for example
    /// the pool's address space cannot be reserved), or
    /// [`SkillError::MemoryAboveRunner`] for a memory size above [`MAX_MEMORY_BYTES`].
    pub fn new(config: RunnerConfig) -> Result<Self, SkillError> {
        let engine = Engine::new(&engine_config(config)?).map_err(|e| engine_error(&e))?;
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap(abi::HOST_MODULE, abi::CALL_TOOL, call_tool_import)
            .map_err(|e| engine_error(&e))?;
        Ok(Self {
            engine,
            linker,
            config,
            skills: HashMap::new(),
        })
    }

    /// The engine (for callers that want to share it).
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile and check a verified skill, replacing one of the same name.
    ///
    /// # Errors
    ///
    /// [`SkillError::BadModule`] for bytes that are not a valid module,
    /// [`SkillError::ForbiddenImport`] naming the first import that is not
    /// `mxp.call_tool`, [`SkillError::BadAbi`] for missing or mistyped
    /// `memory`/`alloc` exports, [`SkillError::MemoryAboveRunner`] if the
    /// manifest's memory cap is above this runner's.
    pub fn load(&mut self, skill: VerifiedSkill) -> Result<(), SkillError> {
        let VerifiedSkill { manifest, bytes } = skill;
        if manifest.limits.memory_bytes > self.config.max_memory_bytes {
            return Err(SkillError::MemoryAboveRunner {
                limit: manifest.limits.memory_bytes,
                runner: self.config.max_memory_bytes,
            });
        }
        let module =
            Module::from_binary(&self.engine, &bytes).map_err(|e| SkillError::BadModule {
                reason: format!("{e:#}"),
            })?;
        check_imports(&module)?;
        check_exports(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| engine_error(&e))?;
        self.skills
            .insert(manifest.name.clone(), Loaded { manifest, pre });
        Ok(())
    }

    /// The manifests of the loaded skills, in no particular order.
    pub fn manifests(&self) -> impl Iterator<Item = &Manifest> {
        self.skills.values().map(|l| &l.manifest)
    }

    /// Run `export` of `skill` on `input` (ABI in [`crate::abi`]).
    ///
    /// The host is lent to the skill for the call (a [`DenyAll`] stands in
    /// meanwhile) and is back in `host` when this returns, whatever the outcome.
    /// This blocks the calling thread for the whole run, host calls included.
    ///
    /// # Errors
    ///
    /// [`SkillError::UnknownSkill`], [`SkillError::InputTooLarge`],
    /// [`SkillError::OutOfFuel`], [`SkillError::MemoryCap`], [`SkillError::Trap`],
    /// [`SkillError::BadAbi`], [`SkillError::ToolNotInManifest`],
    /// [`SkillError::HostCallsExceeded`], [`SkillError::OutputTooLarge`],
    /// [`SkillError::SkillFailed`], [`SkillError::Engine`].
    pub fn invoke(
        &self,
        skill: &str,
        export: &str,
        input: &[u8],
        host: &mut Box<dyn SkillHost>,
    ) -> Result<SkillOutput, SkillError> {
        let loaded = self
            .skills
            .get(skill)
            .ok_or_else(|| SkillError::UnknownSkill {
                name: skill.to_owned(),
            })?;
        let limits = loaded.manifest.limits;
        let run = Run {
            host: std::mem::replace(host, Box::new(DenyAll)),
            tools: loaded.manifest.tools.clone(),
            max_host_calls: limits.max_host_calls,
            max_output_bytes: limits.max_output_bytes,
            memory_cap: limits.memory_bytes,
            host_calls: 0,
            memory_cap_hit: false,
            abort: None,
        };
        let mut store = Store::new(&self.engine, run);
        let result = run_in(&mut store, loaded, export, input);
        let result = result.map_err(|stop| classify(stop, &mut store, &loaded.manifest));
        let host_calls = store.data().host_calls;
        *host = store.into_data().host;
        result.map(|(bytes, fuel_used)| SkillOutput {
            bytes,
            fuel_used,
            host_calls,
        })
    }
}

fn check_imports(module: &Module) -> Result<(), SkillError> {
    for import in module.imports() {
        if import.module() != abi::HOST_MODULE || import.name() != abi::CALL_TOOL {
            return Err(SkillError::ForbiddenImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
        let ExternType::Func(f) = import.ty() else {
            return Err(bad_abi("mxp.call_tool must be imported as a function"));
        };
        let params: Vec<ValType> = f.params().collect();
        let results: Vec<ValType> = f.results().collect();
        if params.len() != 4
            || !params.iter().all(ValType::is_i32)
            || results.len() != 1
            || !results.iter().all(ValType::is_i64)
        {
            return Err(bad_abi(
                "mxp.call_tool must have type (i32, i32, i32, i32) -> i64",
            ));
        }
    }
    Ok(())
}

fn check_exports(module: &Module) -> Result<(), SkillError> {
    if !matches!(module.get_export(abi::MEMORY), Some(ExternType::Memory(_))) {
        return Err(bad_abi(
            "the module must export its linear memory as \"memory\"",
        ));
    }
    let alloc_ok = match module.get_export(abi::ALLOC) {
        Some(ExternType::Func(f)) => {
            let params: Vec<ValType> = f.params().collect();
            let results: Vec<ValType> = f.results().collect();
            params.len() == 1
                && params.iter().all(ValType::is_i32)
                && results.len() == 1
                && results.iter().all(ValType::is_i32)
        }
        _ => false,
    };
    if !alloc_ok {
        return Err(bad_abi(
            "the module must export \"alloc\" of type (i32) -> i32",
        ));
    }
    Ok(())
}

fn classify(stop: Stop, store: &mut Store<Run>, manifest: &Manifest) -> SkillError {
    let run = store.data_mut();
    if let Some(abort) = run.abort.take() {
        return abort;
    }
    if run.memory_cap_hit {
        return SkillError::MemoryCap {
            limit: run.memory_cap,
        };
    }
    match stop {
        Stop::Skill(e) => e,
        Stop::Wasm(e) => match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => SkillError::OutOfFuel {
                fuel: manifest.limits.fuel,
            },
            Some(trap) => SkillError::Trap {
                message: trap.to_string(),
            },
            None => SkillError::Trap {
                message: format!("{e:#}"),
            },
        },
    }
}

fn run_in(
    store: &mut Store<Run>,
    loaded: &Loaded,
    export: &str,
    input: &[u8],
) -> Result<(Vec<u8>, u64), Stop> {
    let limits = loaded.manifest.limits;
    store.limiter(|run| run);
    store.set_fuel(limits.fuel).map_err(|e| engine_error(&e))?;
    if u64::try_from(input.len()).map_or(true, |l| l > limits.memory_bytes) {
        return Err(SkillError::InputTooLarge {
            len: input.len(),
            limit: limits.memory_bytes,
        }
        .into());
    }
    let instance = match loaded.pre.instantiate(&mut *store) {
        Ok(instance) => instance,
        // A trap in a start function or a memory over the cap: classified as such.
        Err(e) if e.downcast_ref::<Trap>().is_some() || store.data().memory_cap_hit => {
            return Err(Stop::Wasm(e));
        }
        // Otherwise wasmtime could not allocate the instance (for example the pool is full).
        Err(e) => return Err(engine_error(&e).into()),
    };
    let entry: TypedFunc<(i32, i32), i64> =
        instance.get_typed_func(&mut *store, export).map_err(|e| {
            bad_abi(format!(
                "export {export:?} is missing or is not (i32, i32) -> i64: {e}"
            ))
        })?;
    let memory = instance
        .get_memory(&mut *store, abi::MEMORY)
        .ok_or_else(|| bad_abi("the module must export its linear memory as \"memory\""))?;
    let alloc: TypedFunc<i32, i32> = instance
        .get_typed_func(&mut *store, abi::ALLOC)
        .map_err(|e| bad_abi(format!("\"alloc\" is not (i32) -> i32: {e}")))?;
    let ptr = write_via(&alloc, memory, &mut *store, input)?;
    let len =
        i32::try_from(input.len()).map_err(|_| bad_abi("input length does not fit in i32"))?;
    let packed = entry.call(&mut *store, (ptr, len)).map_err(Stop::Wasm)?;
    let (out_ptr, out_len) = abi::unpack(packed).ok_or(SkillError::SkillFailed { code: packed })?;
    if u64::from(out_len) > limits.max_output_bytes {
        return Err(SkillError::OutputTooLarge {
            len: u64::from(out_len),
            limit: limits.max_output_bytes,
        }
        .into());
    }
    let data = memory.data(&*store);
    let bytes = abi::range(out_ptr, out_len, data.len())
        .and_then(|r| data.get(r))
        .ok_or_else(|| {
            bad_abi(format!(
                "{export} returned {out_len} bytes at {out_ptr}, outside its {}-byte memory",
                data.len()
            ))
        })?
        .to_vec();
    let left = store.get_fuel().map_err(|e| engine_error(&e))?;
    Ok((bytes, limits.fuel.saturating_sub(left)))
}

/// Copy `bytes` into the guest through its `alloc`, returning the pointer.
fn write_via<T: 'static>(
    alloc: &TypedFunc<i32, i32>,
    memory: wasmtime::Memory,
    mut store: impl wasmtime::AsContextMut<Data = T>,
    bytes: &[u8],
) -> Result<i32, Stop> {
    let len = i32::try_from(bytes.len()).map_err(|_| bad_abi("a buffer does not fit in i32"))?;
    let ptr = alloc.call(&mut store, len).map_err(Stop::Wasm)?;
    let data = memory.data_mut(&mut store);
    let size = data.len();
    let target = abi::range(abi::as_u32(ptr), abi::as_u32(len), size)
        .and_then(|r| data.get_mut(r))
        .ok_or_else(|| {
            bad_abi(format!(
                "alloc({len}) returned {ptr}, outside its {size}-byte memory"
            ))
        })?;
    target.copy_from_slice(bytes);
    Ok(ptr)
}

fn call_tool_import(
    mut caller: Caller<'_, Run>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
) -> wasmtime::Result<i64> {
    match call_tool(&mut caller, [name_ptr, name_len, args_ptr, args_len]) {
        Ok(value) => Ok(value),
        Err(Stop::Wasm(e)) => Err(e),
        Err(Stop::Skill(e)) => {
            let message = e.to_string();
            caller.data_mut().abort = Some(e);
            Err(wasmtime::format_err!("{message}"))
        }
    }
}

fn call_tool(caller: &mut Caller<'_, Run>, [np, nl, ap, al]: [i32; 4]) -> Result<i64, Stop> {
    let memory = caller
        .get_export(abi::MEMORY)
        .and_then(Extern::into_memory)
        .ok_or_else(|| bad_abi("the module must export its linear memory as \"memory\""))?;
    let data = memory.data(&*caller);
    let size = data.len();
    let name = abi::range(abi::as_u32(np), abi::as_u32(nl), size)
        .and_then(|r| data.get(r))
        .ok_or_else(|| {
            bad_abi(format!(
                "call_tool name at {np} (+{nl}) is outside the {size}-byte memory"
            ))
        })?;
    let name = std::str::from_utf8(name)
        .map_err(|_| bad_abi("call_tool name is not UTF-8"))?
        .to_owned();
    let args = abi::range(abi::as_u32(ap), abi::as_u32(al), size)
        .and_then(|r| data.get(r))
        .ok_or_else(|| {
            bad_abi(format!(
                "call_tool args at {ap} (+{al}) are outside the {size}-byte memory"
            ))
        })?
        .to_vec();
    let run = caller.data_mut();
    if !run.tools.contains(&name) {
        return Err(SkillError::ToolNotInManifest { tool: name }.into());
    }
    if run.host_calls >= run.max_host_calls {
        return Err(SkillError::HostCallsExceeded {
            limit: run.max_host_calls,
        }
        .into());
    }
    run.host_calls = run.host_calls.saturating_add(1);
    let result = match run.host.call_tool(&name, &args) {
        Ok(result) => result,
        Err(e) => return Ok(e.code()),
    };
    let len = u64::try_from(result.len()).unwrap_or(u64::MAX);
    if len > run.max_output_bytes {
        return Err(SkillError::OutputTooLarge {
            len,
            limit: run.max_output_bytes,
        }
        .into());
    }
    let alloc: TypedFunc<i32, i32> = caller
        .get_export(abi::ALLOC)
        .and_then(Extern::into_func)
        .ok_or_else(|| bad_abi("the module must export \"alloc\""))?
        .typed(&*caller)
        .map_err(|e| bad_abi(format!("\"alloc\" is not (i32) -> i32: {e}")))?;
    let ptr = write_via(&alloc, memory, &mut *caller, &result)?;
    let len =
        u32::try_from(result.len()).map_err(|_| bad_abi("a tool result does not fit in u32"))?;
    Ok(abi::pack(abi::as_u32(ptr), len))
}
