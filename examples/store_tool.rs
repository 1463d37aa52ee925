//! A small command-line door to the Rust API, used to show (and test) that
//! a store written from one language is read from another.
//!
//! ```text
//! cargo run --example store_tool -- STORE create NAME     # prints "id ID" and "key KEY"
//! cargo run --example store_tool -- STORE verify KEY IP   # prints "valid ID GENERATION" or "denied REASON"
//! ```

use std::process::ExitCode;

use keyward::{CreateOptions, Refusal, Store, Verdict};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [store, "create", name] => {
                let store = Store::open(store)?;
                let created = store.create(name, CreateOptions::new())?;
                println!("id {}\nkey {}", created.info.id, created.key.as_str());
                store.close()?;
            }
            [store, "verify", key, ip] => {
                let store = Store::open(store)?;
                match store.verify(key, ip.parse()?, Some("store_tool")) {
                    Verdict::Valid(g) => println!("valid {} {}", g.key_id, g.generation),
                    Verdict::Denied(Refusal { denial: d, .. }) => println!("denied {}", d.as_str()),
                }
                store.close()?;
            }
            _ => return Err("usage: store_tool STORE create NAME | STORE verify KEY IP".into()),
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store_tool: {e}");
            ExitCode::FAILURE
        }
    }
}
