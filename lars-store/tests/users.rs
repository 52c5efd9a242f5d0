//! Console users and ModID/CmdID descriptions.

use lars_store::{DescKind, Descriptions, StoreError, UserStore};

use crate::both;

both!(users_crud, |db| {
    let s = db.open();
    assert!(s.list_users().unwrap().is_empty());
    let u = s.create_user("admin", "$argon2id$v=19$x").unwrap();
    assert_eq!(u.username, "admin");
    assert!(
        s.create_user("admin", "other")
            .unwrap_err()
            .is_already_exists()
    );
    s.create_user("bob", "h2").unwrap();
    assert_eq!(s.user_by_name("admin").unwrap(), Some(u.clone()));
    assert_eq!(s.user_by_name("nobody").unwrap(), None);
    let names: Vec<String> = s
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["admin", "bob"]);
    s.set_password("admin", "$new").unwrap();
    assert_eq!(
        s.user_by_name("admin").unwrap().unwrap().password_hash,
        "$new"
    );
    assert!(s.set_password("nobody", "x").unwrap_err().is_not_found());
    s.delete_user("bob").unwrap();
    assert!(s.delete_user("bob").unwrap_err().is_not_found());
    assert!(matches!(
        s.create_user(" ", "x"),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.list_users().unwrap().len(), 1);
});

both!(descriptions_crud, |db| {
    let s = db.open();
    s.set_description(DescKind::Mod, 2, "payments").unwrap();
    s.set_description(DescKind::Mod, 1, "users service")
        .unwrap();
    s.set_description(DescKind::Mod, 1, "user service").unwrap();
    s.set_description(DescKind::Cmd, 1, "login").unwrap();
    let mods = s.descriptions(DescKind::Mod, None).unwrap();
    assert_eq!(
        mods.iter()
            .map(|d| (d.code, d.content.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "user service"), (2, "payments")]
    );
    let found = s.descriptions(DescKind::Mod, Some("pay")).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].code, 2);
    assert_eq!(s.descriptions(DescKind::Mod, Some("1")).unwrap()[0].code, 1);
    assert_eq!(s.descriptions(DescKind::Cmd, None).unwrap().len(), 1);
    s.delete_description(DescKind::Mod, 2).unwrap();
    assert!(
        s.delete_description(DescKind::Mod, 2)
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(s.descriptions(DescKind::Mod, None).unwrap().len(), 1);
});
