use multisession::MultiSession;

#[derive(MultiSession)]
enum Session {
    Idle,
    Ordering { pizzas: u32 },
}

fn main() {}
