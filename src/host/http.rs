//! `http`: not built yet (see the issue that adds it).

use super::HostContext;
use rhai::Engine;
use std::rc::Rc;

pub fn register(_engine: &mut Engine, _ctx: &Rc<HostContext>) {}
