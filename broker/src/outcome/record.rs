//! The stored form of one effect's outcome.

/// Largest output kept to answer a retry of a landed effect; a larger
/// output is kept as its length only.
pub const MAX_RECORDED_OUTPUT: usize = 64 << 10;
const VERSION: u8 = 1;
const MAX_TOOL: usize = 255;

/// How an effect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It happened; its output was returned.
    Landed,
    /// It did not happen.
    Failed,
    /// It may or may not have happened.
    InDoubt,
}

impl Outcome {
    /// `landed`, `failed` or `in_doubt`.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Landed => "landed",
            Outcome::Failed => "failed",
            Outcome::InDoubt => "in_doubt",
        }
    }
}

/// Where an effect stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Running (or the node died while it ran).
    Pending,
    /// Over.
    Done {
        /// How.
        outcome: Outcome,
        /// When, Unix ms.
        finished_ms: u64,
        /// The output, for a landed effect whose output fit
        /// [`MAX_RECORDED_OUTPUT`].
        output: Option<Vec<u8>>,
    },
}

/// One effect's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The tool.
    pub tool: String,
    /// When it began, Unix ms.
    pub started_ms: u64,
    /// Where it stands.
    pub state: State,
}

/// A stored record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Shorter than its fields say.
    #[error("the outcome record is truncated")]
    Truncated,
    /// A version or state byte this build does not know.
    #[error("the outcome record has unknown {0} byte {1}")]
    Unknown(&'static str, u8),
    /// Bytes after the last field.
    #[error("the outcome record has trailing bytes")]
    Trailing,
    /// The tool name is not UTF-8 or too long.
    #[error("the outcome record's tool name is invalid")]
    Tool,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let b: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| RecordError::Truncated)?;
        Ok(u64::from_be_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| RecordError::Truncated)?;
        Ok(u32::from_be_bytes(b))
    }
}

impl Record {
    /// The stored bytes: version, state, times, tool, output.
    pub fn encode(&self) -> Vec<u8> {
        let tool = self
            .tool
            .as_bytes()
            .get(..MAX_TOOL)
            .unwrap_or(self.tool.as_bytes());
        let mut out = Vec::with_capacity(32 + tool.len());
        out.push(VERSION);
        let (state, finished, output): (u8, u64, Option<&[u8]>) = match &self.state {
            State::Pending => (0, 0, None),
            State::Done {
                outcome,
                finished_ms,
                output,
            } => (
                match outcome {
                    Outcome::Landed => 1,
                    Outcome::Failed => 2,
                    Outcome::InDoubt => 3,
                },
                *finished_ms,
                output.as_deref(),
            ),
        };
        out.push(state);
        out.extend_from_slice(&self.started_ms.to_be_bytes());
        out.extend_from_slice(&finished.to_be_bytes());
        out.push(tool.len() as u8);
        out.extend_from_slice(tool);
        match output.filter(|o| o.len() <= MAX_RECORDED_OUTPUT) {
            Some(o) => {
                out.push(1);
                out.extend_from_slice(&(o.len() as u32).to_be_bytes());
                out.extend_from_slice(o);
            }
            None => out.push(0),
        }
        out
    }

    /// Decodes stored bytes.
    ///
    /// # Errors
    /// [`RecordError`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut c = Cursor(bytes);
        let v = c.u8()?;
        if v != VERSION {
            return Err(RecordError::Unknown("version", v));
        }
        let state = c.u8()?;
        let started_ms = c.u64()?;
        let finished_ms = c.u64()?;
        let n = usize::from(c.u8()?);
        let tool = std::str::from_utf8(c.take(n)?)
            .map_err(|_| RecordError::Tool)?
            .to_owned();
        let output = match c.u8()? {
            0 => None,
            1 => {
                let n = c.u32()? as usize;
                if n > MAX_RECORDED_OUTPUT {
                    return Err(RecordError::Truncated);
                }
                Some(c.take(n)?.to_vec())
            }
            b => return Err(RecordError::Unknown("output", b)),
        };
        if !c.0.is_empty() {
            return Err(RecordError::Trailing);
        }
        let done = |outcome| State::Done {
            outcome,
            finished_ms,
            output: output.clone(),
        };
        let state = match state {
            0 => State::Pending,
            1 => done(Outcome::Landed),
            2 => done(Outcome::Failed),
            3 => done(Outcome::InDoubt),
            b => return Err(RecordError::Unknown("state", b)),
        };
        Ok(Record {
            tool,
            started_ms,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_cut_is_named() {
        let records = [
            Record {
                tool: "http.fetch".into(),
                started_ms: 5,
                state: State::Pending,
            },
            Record {
                tool: "shell.exec".into(),
                started_ms: 5,
                state: State::Done {
                    outcome: Outcome::Landed,
                    finished_ms: 9,
                    output: Some(b"{\"ok\":1}".to_vec()),
                },
            },
            Record {
                tool: "x".into(),
                started_ms: 1,
                state: State::Done {
                    outcome: Outcome::InDoubt,
                    finished_ms: 2,
                    output: None,
                },
            },
        ];
        for r in records {
            let b = r.encode();
            assert_eq!(Record::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(Record::decode(&b[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(Record::decode(&long), Err(RecordError::Trailing));
        }
        assert_eq!(
            Record::decode(&[9]),
            Err(RecordError::Unknown("version", 9))
        );
    }
}
