//! The `dkms` face's words. Under the name `dkms` we promise upstream dkms's text;
//! for now this face prints what it always printed (the pacman face's lines) except
//! where that was plainly wrong. Making it upstream-exact changes only this file.

use super::{pacman, Line};
use dkms_core::commands::Outcomes;
use dkms_core::engine::Event;

/// The line for one event, or `None` for an event this face does not show.
pub fn line<'a>(event: &Event<'a>) -> Option<Line<'a>> {
    match *event {
        // An installed file is a sub-step of "Installing": `  -> path`, not the
        // pacman face's `==>   -> path`.
        Event::Installed { path, .. } => Some(Line::Detail(path.display().to_string())),
        _ => pacman::line(event),
    }
}

/// autoinstall's closing table.
pub fn autoinstall_summary(outcomes: &Outcomes) -> Vec<Line<'static>> {
    pacman::autoinstall_summary(outcomes)
}
