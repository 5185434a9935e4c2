//! Migrating stored sessions when their shape changes (rule S19), with grammY's pets:
//! the bot first stored `pet_names: Vec<String>`, then `pets: Vec<Pet>`, now also a
//! favorite. Each migration is a typed function from the old shape to the next; stored
//! values carry their version, older ones are migrated on read and written back, and a
//! value from a newer program is an error, never overwritten.
//!
//! ```sh
//! cargo run --example migration
//! ```

use multisession::{ChatContext, MultiSession, keys, store::Store, stores::MemoryStore};
use serde::{Deserialize, Serialize};

/// What version 0 of the bot stored.
#[derive(Deserialize)]
struct PetsV0 {
    pet_names: Vec<String>,
}

/// Version 1.
#[derive(Deserialize)]
struct PetsV1 {
    pets: Vec<Pet>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pet {
    name: String,
    birthday: Option<String>,
}

/// Version 2: today's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pets {
    pets: Vec<Pet>,
    favorite: Option<String>,
}

fn v0_to_v1(old: PetsV0) -> PetsV1 {
    PetsV1 {
        pets: old
            .pet_names
            .into_iter()
            .map(|name| Pet {
                name,
                birthday: None,
            })
            .collect(),
    }
}

fn v1_to_v2(old: PetsV1) -> Pets {
    let favorite = old.pets.first().map(|pet| pet.name.clone());
    Pets {
        pets: old.pets,
        favorite,
    }
}

#[derive(MultiSession)]
struct Session {
    #[session(key = keys::user, migrations = [v0_to_v1, v1_to_v2])]
    pets: Pets,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    // Data written by version 0 of the bot, before it had migrations.
    store
        .write("pets:7", br#"{"pet_names":["Fido","Whiskers"]}"#, None)
        .await?;

    let sessions = Session::builder().default_store(store.clone()).build();
    let user = ChatContext::new(7).with_user(7);
    sessions
        .run(&user, |s| async move {
            let pets = s.pets().await?;
            println!("read and migrated: {pets:?}");
            Ok::<_, multisession::Error>(())
        })
        .await?;
    let stored = store.read("pets:7").await?.expect("written back");
    println!(
        "written back as version 2: {:?}",
        String::from_utf8_lossy(&stored.value)
    );

    // A value from a newer program: an error, and the value stays as it is.
    store
        .write("pets:8", &multisession::codec::with_version(3, b"{}"), None)
        .await?;
    let other = ChatContext::new(8).with_user(8);
    let error = sessions
        .run(&other, |s| async move { s.pets().await.map(|_| ()) })
        .await
        .unwrap_err();
    println!("newer data: {error}");
    Ok(())
}
