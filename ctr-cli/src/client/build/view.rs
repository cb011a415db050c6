//! What a build shows while it runs (`--progress`, `-q`):
//! - plain: the classic builder's lines on stdout (`Step 2/5 : RUN …`, ` ---> CACHED`,
//!   the commands' output as it comes, `Successfully built …`);
//! - tty: BuildKit's live view on stderr: a header with the time and the steps done, one
//!   line per step with its time (or `CACHED`), the running step's last lines of output
//!   beneath it; a failed step's whole output is printed when the build stops;
//! - quiet: nothing but the image ID at the end; what the build said is printed on
//!   stderr if it fails, as `docker build -q` does.
//!
//! `auto` is tty when stderr is a terminal, plain otherwise.

use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::super::stdio::Output;

/// How many lines of the running step's output the tty view shows.
const TAIL: usize = 6;

pub struct View {
    mode: Mode,
    /// Quiet: what would have been shown; tty: the running step's whole output.
    held: Arc<Mutex<String>>,
    tty: Mutex<Option<Tty>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Quiet,
    Plain,
    Tty,
}

struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    step: Option<Step>,
}

struct Step {
    bar: ProgressBar,
    tail: ProgressBar,
    label: String,
    started: Instant,
    cached: bool,
}

impl View {
    /// The view `-q` and `--progress` ask for.
    pub fn new(quiet: bool, progress: &str) -> anyhow::Result<View> {
        let terminal = std::io::stderr().is_terminal();
        let mode = match (quiet, progress) {
            (true, _) => Mode::Quiet,
            (false, "plain") => Mode::Plain,
            (false, "auto") if terminal => Mode::Tty,
            (false, "auto") => Mode::Plain,
            (false, "tty") if terminal => Mode::Tty,
            (false, "tty") => anyhow::bail!("--progress=tty needs a terminal on stderr"),
            (false, other) => anyhow::bail!("invalid --progress {other:?}: auto, plain or tty"),
        };
        let tty = (mode == Mode::Tty).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let header = multi.add(ProgressBar::new(0));
            header.set_style(style("[+] Building {secs} ({pos}/{len}) {msg}"));
            header.enable_steady_tick(Duration::from_millis(100));
            Tty {
                multi,
                header,
                step: None,
            }
        });
        Ok(View {
            mode,
            held: Arc::default(),
            tty: Mutex::new(tty),
        })
    }

    /// A line of the classic builder's (` ---> 1a2b3c`, ` ---> Running in …`).
    pub fn say(&self, line: &str) {
        match self.mode {
            Mode::Plain => {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
            Mode::Quiet => hold(&self.held, &format!("{line}\n")),
            Mode::Tty => {}
        }
    }

    /// Step `n` of `total` begins.
    pub fn step(&self, n: usize, total: usize, text: &str) {
        if self.mode != Mode::Tty {
            return self.say(&format!("Step {n}/{total} : {text}"));
        }
        let mut t = self.lock_tty();
        let Some(t) = t.as_mut() else { return };
        t.end_step(false);
        t.header.set_length(total as u64);
        t.header.set_position(n.saturating_sub(1) as u64);
        let label = format!("[{n}/{total}] {}", one_line(text));
        let bar = t.multi.add(ProgressBar::new_spinner());
        bar.set_style(style(" => {wide_msg} {secs}"));
        bar.set_message(label.clone());
        bar.enable_steady_tick(Duration::from_millis(100));
        let tail = t.multi.add(ProgressBar::new_spinner());
        tail.set_style(style("{msg}"));
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        t.step = Some(Step {
            bar,
            tail,
            label,
            started: Instant::now(),
            cached: false,
        });
    }

    /// The running step was found in the cache.
    pub fn cached(&self) {
        if self.mode != Mode::Tty {
            return self.say(" ---> CACHED");
        }
        if let Some(step) = self.lock_tty().as_mut().and_then(|t| t.step.as_mut()) {
            step.cached = true;
        }
    }

    /// Where a RUN step's output goes.
    pub fn output(&self) -> Output {
        if self.mode == Mode::Plain {
            return Output::Inherit;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let held = self.held.clone();
        let tail = self
            .lock_tty()
            .as_ref()
            .and_then(|t| t.step.as_ref())
            .map(|s| s.tail.clone());
        let spawned = std::thread::Builder::new()
            .name("berth-build-output".into())
            .spawn(move || {
                let mut last: VecDeque<String> = VecDeque::new();
                let mut partial = String::new();
                for chunk in rx {
                    let text = String::from_utf8_lossy(&chunk);
                    hold(&held, &text);
                    let Some(tail) = &tail else { continue };
                    partial.push_str(&text);
                    while let Some(end) = partial.find(['\n', '\r']) {
                        let line: String = partial.drain(..=end).collect();
                        let line = line.trim_end_matches(['\n', '\r']);
                        if !line.is_empty() {
                            last.push_back(line.to_string());
                        }
                    }
                    while last.len() > TAIL {
                        last.pop_front();
                    }
                    let shown: Vec<String> = last
                        .iter()
                        .chain((!partial.is_empty()).then_some(&partial))
                        .map(|l| format!(" => => # {}", one_line(l)))
                        .collect();
                    tail.set_message(shown.join("\n"));
                }
            });
        match spawned {
            Ok(_) => Output::To(tx),
            // No thread to show it: the output goes where it would without a view.
            Err(_) => Output::Inherit,
        }
    }

    /// The build stopped with an error: what the user needs to see of it.
    pub fn failed(&self) {
        match self.mode {
            Mode::Plain => {}
            Mode::Quiet => {
                eprint!(
                    "{}",
                    self.held.lock().unwrap_or_else(PoisonError::into_inner)
                );
            }
            Mode::Tty => {
                let mut t = self.lock_tty();
                if let Some(t) = t.as_mut() {
                    let label = t.step.as_ref().map(|s| s.label.clone());
                    t.end_step(true);
                    t.finish_header("ERROR");
                    if let Some(label) = label {
                        let out = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                        eprintln!("------\n > {label}:");
                        for line in out.lines() {
                            eprintln!("{line}");
                        }
                        eprintln!("------");
                    }
                }
            }
        }
    }

    /// The build is done: the image and its names (full, and as Docker shows them).
    pub fn finish(&self, id: &str, short: &str, names: &[(String, String)]) {
        if self.mode != Mode::Tty {
            self.say(&format!("Successfully built {short}"));
            for (_, n) in names {
                self.say(&format!("Successfully tagged {n}"));
            }
            return;
        }
        let mut t = self.lock_tty();
        let Some(t) = t.as_mut() else { return };
        t.end_step(false);
        let started = Instant::now();
        let mut lines = vec![format!(" => => writing image {id}")];
        lines.extend(names.iter().map(|(n, _)| format!(" => => naming to {n}")));
        let label = "exporting to image".to_string();
        let bar = t.multi.add(ProgressBar::new_spinner());
        done_line(&bar, &label, started, false);
        for l in lines {
            let b = t.multi.add(ProgressBar::new_spinner());
            b.set_style(style("{msg}"));
            b.finish_with_message(l);
        }
        t.finish_header("FINISHED");
    }

    fn lock_tty(&self) -> std::sync::MutexGuard<'_, Option<Tty>> {
        self.tty.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tty {
    /// The running step's line made final (its time, `CACHED` or `ERROR`).
    fn end_step(&mut self, error: bool) {
        if let Some(s) = self.step.take() {
            s.tail.finish_and_clear();
            let label = if s.cached {
                format!("CACHED {}", s.label)
            } else if error {
                format!("ERROR {}", s.label)
            } else {
                s.label.clone()
            };
            done_line(&s.bar, &label, s.started, s.cached);
            self.header.inc(1);
        }
    }

    fn finish_header(&self, word: &str) {
        self.header.finish_with_message(word.to_string());
    }
}

/// A finished line: ` => label          1.2s` (the time at the right edge).
fn done_line(bar: &ProgressBar, label: &str, started: Instant, cached: bool) {
    bar.set_style(style(" => {wide_msg} {prefix}"));
    bar.set_prefix(if cached {
        "0.0s".to_string()
    } else {
        format!("{:.1}s", started.elapsed().as_secs_f64())
    });
    bar.finish_with_message(label.to_string());
}

/// A template; `{secs}` is the bar's time so far as BuildKit shows it (`1.2s`).
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key(
            "secs",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", s.elapsed().as_secs_f64());
            },
        )
}

fn hold(held: &Mutex<String>, text: &str) {
    held.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push_str(text);
}

/// A step's text on one line (a here-document or a continuation folded).
fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    const WIDTH: usize = 100;
    if line.chars().count() > WIDTH {
        let cut: String = line.chars().take(WIDTH - 3).collect();
        format!("{cut}...")
    } else {
        line
    }
}
