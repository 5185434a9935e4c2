//! `multisession`: the session inspector. Lists, shows, edits, deletes, exports and
//! imports the sessions of a multisession bot on any store, through the library's store
//! API (no SQL of its own).

mod cli;
mod dump;
mod edit;
mod error;
mod inspect;
mod progress;
mod target;
mod value;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    error::CliError,
    inspect::Namespace,
    target::{Access, Target},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The store is dropped (a snapshot saved) before the runtime goes.
    let result = runtime.block_on(run(cli));
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let access = match cli.command {
        Command::Import { .. } => Access::Create,
        _ => Access::Existing,
    };
    let target = Target::open(&cli.store, access).await?;
    let bot = cli.store.bot;
    match cli.command {
        Command::List {
            fragment,
            limit,
            long,
        } => inspect::list(&target, &Namespace::new(&fragment, bot), limit, long).await,
        Command::Count { fragment } => {
            inspect::count(&target, &Namespace::new(&fragment, bot)).await
        }
        Command::Get {
            fragment,
            key,
            json,
        } => inspect::get(&target, &Namespace::new(&fragment, bot), &key, json).await,
        Command::Set {
            fragment,
            key,
            args,
        } => edit::set(&target, &Namespace::new(&fragment, bot), &key, args).await,
        Command::Delete {
            fragment,
            key,
            revision,
        } => edit::delete(&target, &Namespace::new(&fragment, bot), &key, revision).await,
        Command::Clear {
            fragment,
            yes,
            dry_run,
        } => edit::clear(&target, &Namespace::new(&fragment, bot), yes, dry_run).await,
        Command::Sweep => {
            let done = target.sweep().await?;
            println!("{done}");
            Ok(())
        }
        Command::Export { fragments, prefix } => {
            dump::export(&target, bot, &fragments, &prefix).await
        }
        Command::Import {
            file,
            overwrite,
            dry_run,
        } => dump::import(&target, file.as_deref(), overwrite, dry_run).await,
    }
}
