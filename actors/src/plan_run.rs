//! One Call's plan run as a pure, resumable state machine.
//!
//! ```text
//!   next() ─▶ NeedPlan ── planned(PlannerStep) ──┐
//!     ▲                                          │
//!     ├──── Intent(step) ── complete(output) ◀───┘
//!     └──── Done(answer)
//! ```
//!
//! The run yields what it needs next: the planner's next steps, a step's
//! output (the executor gates and performs the intent), or nothing because
//! it is done. It holds no I/O and no clock, so the same inputs (the
//! planner's answers and the recorded outputs) replay to the same answer.
//!
//! It also carries the flow labels of the run: a step's output may carry
//! the sources of its data (a file read, data derived from one), and
//! [`PlanRun::flows_into`] says which of them reach a later step's
//! arguments (`mxp_governance::flow`).

use std::collections::VecDeque;

use mxp_governance::flow::{FlowMode, FlowSource, Labelled, flows_into};
use mxp_protocol::CallBody;
use serde_json::{Value, json};

use crate::planner::{PlanStep, PlannerStep, StepResult};

/// Steps one run may take at most: a planner that never finishes is cut off.
pub const MAX_STEPS: usize = 64;

/// What a run needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next<'a> {
    /// Ask the planner, with the Call and the steps run so far.
    NeedPlan {
        /// The Call.
        call: &'a CallBody,
        /// Steps run so far.
        done: &'a [StepResult],
    },
    /// Perform this step (through the gate), then [`PlanRun::complete`].
    Intent(&'a PlanStep),
    /// The run is over; answer with this.
    Done(&'a Value),
}

/// A call on a run that does not fit its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanRunError {
    /// `planned` while the run waits for a step's output, or is done.
    #[error("the run is not waiting for the planner")]
    NotPlanning,
    /// `complete` while no step is running.
    #[error("the run has no step in progress")]
    NoStep,
    /// The planner asked for more than [`MAX_STEPS`] steps.
    #[error("the plan exceeds {MAX_STEPS} steps")]
    TooManySteps,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Planning,
    Running,
    Done(Value),
}

/// One Call's plan run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRun {
    call: CallBody,
    done: Vec<StepResult>,
    /// The sources each done step's output carries (parallel to `done`).
    labels: Vec<Vec<FlowSource>>,
    queue: VecDeque<PlanStep>,
    state: State,
}

impl PlanRun {
    /// A run for `call`, which first asks the planner.
    pub fn new(call: CallBody) -> PlanRun {
        PlanRun {
            call,
            done: Vec::new(),
            labels: Vec::new(),
            queue: VecDeque::new(),
            state: State::Planning,
        }
    }

    /// The Call.
    pub fn call(&self) -> &CallBody {
        &self.call
    }

    /// Steps run so far, with their outputs.
    pub fn done(&self) -> &[StepResult] {
        &self.done
    }

    /// What the run needs next.
    pub fn next(&self) -> Next<'_> {
        match &self.state {
            State::Done(v) => Next::Done(v),
            State::Running => match self.queue.front() {
                Some(step) => Next::Intent(step),
                None => Next::NeedPlan {
                    call: &self.call,
                    done: &self.done,
                },
            },
            State::Planning => Next::NeedPlan {
                call: &self.call,
                done: &self.done,
            },
        }
    }

    /// Feeds the planner's answer.
    ///
    /// # Errors
    /// [`PlanRunError`] if the run was not waiting for the planner, or the
    /// plan grows past [`MAX_STEPS`].
    pub fn planned(&mut self, step: PlannerStep) -> Result<(), PlanRunError> {
        if !matches!(self.next(), Next::NeedPlan { .. }) {
            return Err(PlanRunError::NotPlanning);
        }
        match step {
            PlannerStep::Steps(steps) if steps.is_empty() => {
                self.state = State::Done(self.answer());
            }
            PlannerStep::Steps(steps) => {
                if self.done.len() + steps.len() > MAX_STEPS {
                    return Err(PlanRunError::TooManySteps);
                }
                self.queue.extend(steps);
                self.state = State::Running;
            }
            PlannerStep::Finish(Some(v)) => self.state = State::Done(v),
            PlannerStep::Finish(None) => self.state = State::Done(self.answer()),
        }
        Ok(())
    }

    /// Feeds the output of the step [`PlanRun::next`] yielded.
    ///
    /// # Errors
    /// [`PlanRunError::NoStep`] if no step was in progress.
    pub fn complete(&mut self, output: Value) -> Result<(), PlanRunError> {
        self.complete_labelled(output, Vec::new())
    }

    /// Feeds the output of the step [`PlanRun::next`] yielded, with the
    /// sources its data carries (empty: none).
    ///
    /// # Errors
    /// [`PlanRunError::NoStep`] if no step was in progress.
    pub fn complete_labelled(
        &mut self,
        output: Value,
        sources: Vec<FlowSource>,
    ) -> Result<(), PlanRunError> {
        if self.state != State::Running {
            return Err(PlanRunError::NoStep);
        }
        let step = self.queue.pop_front().ok_or(PlanRunError::NoStep)?;
        self.done.push(StepResult { step, output });
        self.labels.push(sources);
        Ok(())
    }

    /// The index (from 0) the step in progress, or the next one, has.
    pub fn step_index(&self) -> usize {
        self.done.len()
    }

    /// The sources step `index`'s output carries.
    pub fn labels(&self, index: usize) -> &[FlowSource] {
        self.labels.get(index).map_or(&[], Vec::as_slice)
    }

    /// The sources whose data reaches `args` (a step about to run): the
    /// secrets it references and the labelled outputs it holds (or, in
    /// [`FlowMode::Run`], every labelled output so far).
    pub fn flows_into(&self, args: &Value, mode: FlowMode) -> Vec<FlowSource> {
        flows_into(args, &self.labelled(), mode)
    }

    /// The labelled outputs so far, with their sources.
    pub fn labelled(&self) -> Vec<Labelled<'_>> {
        self.done
            .iter()
            .zip(&self.labels)
            .filter(|(_, l)| !l.is_empty())
            .map(|(r, l)| Labelled {
                sources: l,
                output: &r.output,
            })
            .collect()
    }

    /// The answer, once [`PlanRun::next`] says [`Next::Done`]; `None` before.
    pub fn into_answer(self) -> Option<Value> {
        match self.state {
            State::Done(v) => Some(v),
            _ => None,
        }
    }

    /// The answer built from the outputs: the last one's alone for one step,
    /// `{"result": last, "steps": [...]}` for several, `null` for none.
    fn answer(&self) -> Value {
        match self.done.as_slice() {
            [] => Value::Null,
            [one] => one.output.clone(),
            many => json!({
                "result": many.last().map(|r| r.output.clone()).unwrap_or(Value::Null),
                "steps": many.iter().map(|r| r.output.clone()).collect::<Vec<_>>(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(tool: &str, args: Value) -> PlanStep {
        PlanStep {
            tool: tool.into(),
            args,
        }
    }

    #[test]
    fn a_run_yields_plan_intents_and_done_in_order() {
        let mut run = PlanRun::new(CallBody::new("m", json!(1)));
        assert!(matches!(run.next(), Next::NeedPlan { done: [], .. }));
        run.planned(PlannerStep::Steps(vec![
            step("echo", json!(1)),
            step("status", Value::Null),
        ]))
        .unwrap();
        assert_eq!(run.next(), Next::Intent(&step("echo", json!(1))));
        assert_eq!(
            run.planned(PlannerStep::Finish(None)),
            Err(PlanRunError::NotPlanning)
        );
        run.complete(json!("a")).unwrap();
        assert_eq!(run.next(), Next::Intent(&step("status", Value::Null)));
        run.complete(json!("b")).unwrap();
        // Out of steps: the planner is asked again, with both results.
        match run.next() {
            Next::NeedPlan { done, .. } => assert_eq!(done.len(), 2),
            other => panic!("{other:?}"),
        }
        run.planned(PlannerStep::Finish(None)).unwrap();
        assert_eq!(
            run.next(),
            Next::Done(&json!({"result": "b", "steps": ["a", "b"]}))
        );
        assert_eq!(run.complete(json!(0)), Err(PlanRunError::NoStep));
    }

    #[test]
    fn one_step_answers_with_its_output_and_none_with_null() {
        let mut run = PlanRun::new(CallBody::new("m", Value::Null));
        run.planned(PlannerStep::Steps(vec![step("echo", json!(5))]))
            .unwrap();
        run.complete(json!(5)).unwrap();
        run.planned(PlannerStep::Finish(None)).unwrap();
        assert_eq!(run.next(), Next::Done(&json!(5)));

        let mut empty = PlanRun::new(CallBody::new("m", Value::Null));
        empty.planned(PlannerStep::Steps(vec![])).unwrap();
        assert_eq!(empty.next(), Next::Done(&Value::Null));

        let mut explicit = PlanRun::new(CallBody::new("m", Value::Null));
        explicit
            .planned(PlannerStep::Finish(Some(json!("x"))))
            .unwrap();
        assert_eq!(explicit.next(), Next::Done(&json!("x")));
    }

    #[test]
    fn labels_follow_outputs_into_later_arguments() {
        let secret = "the launch code is 0000-1111-2222-3333";
        let mut run = PlanRun::new(CallBody::new("m", Value::Null));
        run.planned(PlannerStep::Steps(vec![
            step("echo", json!("hello there, general")),
            step("fs.read", json!({"path": "code.txt"})),
        ]))
        .unwrap();
        run.complete(json!("hello there, general")).unwrap();
        assert_eq!(run.step_index(), 1);
        run.complete_labelled(
            json!({ "content": secret }),
            vec![FlowSource::file("code.txt", 1)],
        )
        .unwrap();
        assert_eq!(run.labels(1), &[FlowSource::file("code.txt", 1)]);
        assert!(run.labels(0).is_empty() && run.labels(9).is_empty());
        let leak = json!({"url": format!("https://x.example/?c={secret}")});
        assert_eq!(
            run.flows_into(&leak, FlowMode::Content),
            vec![FlowSource::file("code.txt", 1)]
        );
        // Unlabelled data (step 0's output) is no flow.
        let fine = json!({"url": "https://x.example/?c=hello there, general"});
        assert!(run.flows_into(&fine, FlowMode::Content).is_empty());
        assert_eq!(
            run.flows_into(&fine, FlowMode::Run),
            vec![FlowSource::file("code.txt", 1)]
        );
    }

    #[test]
    fn a_planner_that_never_stops_is_cut_off() {
        let mut run = PlanRun::new(CallBody::new("m", Value::Null));
        let mut refused = false;
        for _ in 0..=MAX_STEPS {
            match run.planned(PlannerStep::Steps(vec![step("echo", Value::Null)])) {
                Ok(()) => run.complete(Value::Null).unwrap(),
                Err(e) => {
                    assert_eq!(e, PlanRunError::TooManySteps);
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
        assert_eq!(run.done().len(), MAX_STEPS);
    }
}
