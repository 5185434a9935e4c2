use multisession::MultiSession;

#[derive(Default, serde::Serialize)]
struct Cart {
    items: Vec<String>,
}

#[derive(MultiSession)]
struct Session {
    cart: Cart,
}

fn main() {}
