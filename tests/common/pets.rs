//! grammY's pets migration scenario: three shapes of one fragment and the two steps
//! between them, shared by the migration tests.

use serde::{Deserialize, Serialize};

/// Version 0: what the bot stored before it had migrations.
#[derive(Deserialize)]
pub struct PetsV0 {
    pub pet_names: Vec<String>,
}

/// Version 1.
#[derive(Serialize, Deserialize)]
pub struct PetsV1 {
    pub pets: Vec<Pet>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pet {
    pub name: String,
    pub birthday: Option<u32>,
}

/// Version 2, the current shape.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pets {
    pub pets: Vec<Pet>,
    pub favorite: Option<String>,
}

pub fn add_birthdays(old: PetsV0) -> PetsV1 {
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

pub fn pick_favorite(old: PetsV1) -> Pets {
    let favorite = old.pets.first().map(|p| p.name.clone());
    Pets {
        pets: old.pets,
        favorite,
    }
}
