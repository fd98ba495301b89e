//! The cost of the skill sandbox around wasmtime: a skill invocation through
//! `SkillRunner` (fresh store + pooled instance, fuel, memory limiter, ABI
//! bounds checks, input/output copy) against bare wasmtime doing the same
//! pooled instantiate + `alloc` + call on the same engine configuration and
//! module, side by side.
//!
//! Run: `cargo bench -p mxp-skills --bench invoke`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mxp_skills::host::DenyAll;
use mxp_skills::runner::engine_config;
use mxp_skills::supply::{self, MANIFEST_FILE, MODULE_FILE};
use mxp_skills::{RunnerConfig, SkillHost, SkillRunner};
use wasmtime::{Engine, Linker, Module, Store, TypedFunc};

const ECHO: &str = r#"(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func (export "run") (param $p i32) (param $l i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
            (i64.extend_i32_u (local.get $l)))))"#;

const INPUT: &[u8] = b"sixteen bytes in";
const FUEL: u64 = 1_000_000;

fn bench(c: &mut Criterion) {
    let bytes = wat::parse_str(ECHO).unwrap();
    let config = RunnerConfig {
        max_instances: 4,
        max_memory_bytes: 1 << 20,
    };

    // Through the runner: a real skill directory, pinned and verified.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("echo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(MODULE_FILE), &bytes).unwrap();
    let hash = supply::sha256_hex(&bytes);
    std::fs::write(
        dir.join(MANIFEST_FILE),
        format!(
            "name = \"echo\"\nversion = \"1.0.0\"\nsha256 = \"{hash}\"\n[limits]\nfuel = {FUEL}\nmemory_bytes = 1048576\nmax_output_bytes = 1024\nmax_host_calls = 0\n"
        ),
    )
    .unwrap();
    let pins = [("echo".to_owned(), hash)].into_iter().collect();
    let skill = supply::load(&dir, &pins, &root.path().join("quarantine")).unwrap();
    let mut runner = SkillRunner::new(config).unwrap();
    runner.load(skill).unwrap();
    let mut host: Box<dyn SkillHost> = Box::new(DenyAll);

    // Bare wasmtime: same engine configuration, same module, no sandbox layer.
    let engine = Engine::new(&engine_config(config).unwrap()).unwrap();
    let module = Module::from_binary(&engine, &bytes).unwrap();
    let pre = Linker::<()>::new(&engine).instantiate_pre(&module).unwrap();

    let mut group = c.benchmark_group("skill_invoke");
    group.bench_function(
        "skill invoke through SkillRunner (instantiate + call a trivial export)",
        |b| {
            b.iter(|| {
                let out = runner
                    .invoke("echo", "run", black_box(INPUT), &mut host)
                    .unwrap();
                black_box(out.bytes.len())
            });
        },
    );
    group.bench_function("bare wasmtime pooled instantiate + call", |b| {
        b.iter(|| {
            let mut store = Store::new(&engine, ());
            store.set_fuel(FUEL).unwrap();
            let instance = pre.instantiate(&mut store).unwrap();
            let memory = instance.get_memory(&mut store, "memory").unwrap();
            let alloc: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "alloc").unwrap();
            let run: TypedFunc<(i32, i32), i64> =
                instance.get_typed_func(&mut store, "run").unwrap();
            let len = i32::try_from(INPUT.len()).unwrap();
            let ptr = alloc.call(&mut store, len).unwrap();
            memory
                .write(&mut store, usize::try_from(ptr).unwrap(), black_box(INPUT))
                .unwrap();
            let packed = run.call(&mut store, (ptr, len)).unwrap();
            let (p, l) = mxp_skills::abi::unpack(packed).unwrap();
            let mut out = vec![0; usize::try_from(l).unwrap()];
            memory
                .read(&store, usize::try_from(p).unwrap(), &mut out)
                .unwrap();
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
