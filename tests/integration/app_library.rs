//! The app as people use it all day (issue 24): the results table at large text scales, folders
//! opened as libraries of their own, libraries renamed, shrunk and relabelled, names in any
//! script, and a map legend for many labels.

use std::path::{Path, PathBuf};

use earshot::app::{Command, EarshotApp};
use earshot::demo::{DEMO_CLASSES, synthesise, write_wav};
use earshot::model::SeededRng;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::app::{Dropped, harness, harness_at, wait_for};

/// Writes `per_class` synthetic sounds of each class into `folder/<label>/<name>`.
fn write_sounds(
    folder: &Path,
    classes: &[(&str, &str)],
    per_class: usize,
    name: impl Fn(&str, usize) -> String,
) -> Vec<PathBuf> {
    let mut rng = SeededRng::new(7);
    let mut paths = Vec::new();
    for (label, class) in classes {
        let dir = folder.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let path = dir.join(name(label, i));
            write_wav(&path, &synthesise(class, &mut rng)).unwrap();
            paths.push(path);
        }
    }
    paths
}

/// `per_class` sounds of every demo class in `folder`, and `parts` one after another in
/// `recording`: every file written.
fn demo_sounds_and(
    folder: &Path,
    per_class: usize,
    recording: &Path,
    parts: &[Vec<f32>],
) -> Vec<PathBuf> {
    let classes: Vec<(&str, &str)> = DEMO_CLASSES.iter().map(|c| (*c, *c)).collect();
    let mut files = write_sounds(folder, &classes, per_class, |label, i| {
        format!("{label}-{i}.wav")
    });
    std::fs::create_dir_all(recording.parent().unwrap()).unwrap();
    write_wav(recording, &parts.concat()).unwrap();
    files.push(recording.to_owned());
    files
}

/// Waits until the selected library's index holds `files` files.
fn wait_for_index(h: &mut Harness<'static, EarshotApp>, files: usize) {
    wait_for(h, &format!("an index of {files} files"), |app| {
        app.current()
            .and_then(|(_, index)| index)
            .is_some_and(|index| index.files.len() == files)
    });
}

#[test]
fn at_1_5x_with_the_inspector_and_long_names_every_column_of_the_results_can_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("recordings");
    let classes: Vec<(&str, &str)> = DEMO_CLASSES.iter().take(3).map(|c| (*c, *c)).collect();
    let long = |label: &str, i: usize| {
        format!(
            "{label}-{i}-recorded-at-dawn-on-the-river-bank-with-the-field-recorder-in-its-windshield.wav"
        )
    };
    let files = write_sounds(&folder, &classes, 3, long);
    // 1280x800 pixels at 1.5 pixels per point.
    let (width, height) = (853.0, 533.0);
    let mut h = harness_at(dir.path(), [width, height], 1.5);
    h.state_mut().push(Command::Dropped(vec![folder.clone()]));
    wait_for_index(&mut h, files.len());
    h.state_mut()
        .push(Command::QueryFile(files[0].clone(), None));
    wait_for(&mut h, "results and the inspector", |app| {
        !app.results.is_empty() && app.inspector.is_some()
    });

    // The library panel keeps to its share of the window: long names are cut, not widened for.
    let listed = h
        .get_all_by_label(&long(classes[1].0, 1))
        .map(|n| n.rect())
        .min_by(|a, b| a.min.x.total_cmp(&b.min.x))
        .unwrap();
    assert!(listed.max.x <= width * 0.3 + 16.0, "{listed:?}");

    // The last column of the first result can be scrolled to and is then on screen.
    h.get_all_by_label("query").next().unwrap().scroll_to_me();
    h.run();
    for label in ["query", "yes", "no"] {
        let rect = h.get_all_by_label(label).next().unwrap().rect();
        assert!(
            rect.min.x >= 0.0 && rect.max.x <= width && rect.max.y <= height,
            "{label}: {rect:?}"
        );
    }
}

#[test]
fn a_dropped_folder_opens_as_its_own_library_which_can_be_renamed_shrunk_and_relabelled() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("dawn"), dir.path().join("dusk"));
    let name = |label: &str, i: usize| format!("{label}-{i}.wav");
    let in_a = write_sounds(&a, &[("up", "chirp-up"), ("down", "chirp-down")], 3, name);
    let in_b = write_sounds(&b, &[("tone", "tone-low")], 3, name);
    let mut h = harness(dir.path());

    // Dropped on the window, as a file manager drops it.
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(a.clone())));
    wait_for_index(&mut h, in_a.len());
    // A second folder is a library of its own, not merged into the one selected.
    h.state_mut().push(Command::Dropped(vec![b.clone()]));
    wait_for_index(&mut h, in_b.len());
    let libraries = &h.state().settings.libraries;
    assert_eq!(libraries.len(), 2);
    assert_eq!(libraries[0].folders, std::slice::from_ref(&a));
    assert_eq!(
        (libraries[1].name.as_str(), &libraries[1].folders),
        ("dusk", &vec![b.clone()])
    );
    // Dropping a folder a library holds selects that library.
    h.state_mut().push(Command::Dropped(vec![a.join("up")]));
    wait_for(&mut h, "the first library", |app| {
        app.settings.selected_library == 0
    });
    assert_eq!(h.state().settings.libraries.len(), 2);

    // Renamed in place (the name field takes the keyboard at once, the old name selected):
    // Enter keeps the new name.
    h.get_by_label("✏").click();
    h.run();
    h.input_mut()
        .events
        .push(egui::Event::Text("Dawn chorus".into()));
    h.run();
    h.key_press(egui::Key::Enter);
    h.run();
    assert_eq!(h.state().settings.libraries[0].name, "Dawn chorus");

    // A folder added, then removed: its files leave the index.
    h.state_mut().push(Command::AddFolders(vec![b.clone()]));
    wait_for_index(&mut h, in_a.len() + in_b.len());
    h.get_all_by_label("×").nth(1).unwrap().click();
    wait_for_index(&mut h, in_a.len());
    assert_eq!(
        h.state().settings.libraries[0].folders,
        std::slice::from_ref(&a)
    );

    // Labels from a CSV (relative to its folder) replace the folder names.
    let csv = dir.path().join("labels.csv");
    let rows: String = in_a
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let relative = p.strip_prefix(dir.path()).unwrap().display();
            format!("{relative},{}\n", if i % 2 == 0 { "even" } else { "odd" })
        })
        .collect();
    std::fs::write(&csv, format!("path,label\n{rows}")).unwrap();
    h.state_mut().push(Command::SetLabels(Some(csv)));
    wait_for(&mut h, "the new labels", |app| {
        app.current()
            .and_then(|(_, index)| index)
            .is_some_and(|index| {
                index
                    .files
                    .iter()
                    .all(|f| f.label == "even" || f.label == "odd")
            })
    });
    h.get_by_label("labels: labels.csv");
}

#[test]
fn names_in_any_script_are_drawn_and_the_map_legend_names_every_label() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("field");
    // Ten labels (more than the palette's eight colours), some in scripts the bundled fonts lack.
    let labels = [
        "鳥の声",
        "طيور",
        "птицы",
        "🐦 birds",
        "rain",
        "wind",
        "engine",
        "dog",
        "crickets",
        "frogs",
    ];
    let classes: Vec<(&str, &str)> = labels
        .iter()
        .zip(DEMO_CLASSES.iter().cycle())
        .map(|(l, c)| (*l, *c))
        .collect();
    let files = write_sounds(&folder, &classes, 2, |label, i| {
        format!("{label} 録音 {i}.wav")
    });
    let mut h = harness(dir.path());
    h.state_mut().push(Command::Dropped(vec![folder]));
    wait_for_index(&mut h, files.len());
    // The harness panics on any character no font can draw: reaching here means they all drew.
    h.get_by_label("鳥の声 録音 0.wav");
    h.get_by_label("طيور 録音 1.wav");

    h.get_by_label("Map").click();
    wait_for(&mut h, "the map", |app| !app.map.screen_points.is_empty());
    for label in labels {
        h.get_by_label(&format!("{label} (2)"));
    }
}

#[test]
fn results_can_be_filtered_sorted_cut_to_a_number_and_past_queries_revisited() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    crate::app::open_demo_library(&mut h);
    let chirp = crate::app::demo_file(dir.path(), "chirp-up", 1);
    let warble = crate::app::demo_file(dir.path(), "warble", 2);
    h.state_mut().push(Command::QueryFile(chirp.clone(), None));
    wait_for(&mut h, "results", |app| app.results.len() == 48);

    // Filtered by label: the other rows leave the table, the count says so.
    h.get_by_label("Filter results").click();
    h.run();
    h.get_by_label("Filter results").type_text("warble");
    h.run();
    assert_eq!(h.state().results_filter, "warble");
    h.get_by_label_contains("6 of 48 shown");
    // One "query" button per row left.
    assert_eq!(h.query_all_by_label("query").count(), 6);
    h.state_mut().results_filter.clear();

    // Sorted by a column, then the other way; the selected result stays selected.
    let selected_rank = h.state().results[h.state().selected.unwrap()].hit.rank;
    h.get_by_label("label").click();
    // The table scrolls to the selected result over a few frames.
    h.run_steps(10);
    let labels = |h: &Harness<'static, EarshotApp>| -> Vec<String> {
        h.state()
            .results
            .iter()
            .map(|r| r.hit.label.clone())
            .collect()
    };
    assert!(labels(&h).is_sorted(), "{:?}", labels(&h));
    let app = h.state();
    assert_eq!(app.results[app.selected.unwrap()].hit.rank, selected_rank);
    h.get_by_label("label ↑").click();
    h.run_steps(10);
    assert!(labels(&h).iter().rev().is_sorted());

    // Fewer results per query.
    h.state_mut().push(Command::SetTop(10));
    wait_for(&mut h, "10 results", |app| app.results.len() == 10);
    // Back and forward through the queries searched with.
    h.state_mut().push(Command::QueryFile(warble.clone(), None));
    let query_is = |path: &Path| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        move |app: &EarshotApp| {
            app.query.as_ref().is_some_and(|q| q.clip.name == name) && !app.results.is_empty()
        }
    };
    wait_for(&mut h, "the warble's results", query_is(&warble));
    h.get_by_label("←").click();
    wait_for(&mut h, "the chirp again", query_is(&chirp));
    h.key_press_modifiers(egui::Modifiers::ALT, egui::Key::ArrowRight);
    wait_for(&mut h, "the warble again", query_is(&warble));
}

#[test]
fn similar_sounds_list_every_similar_moment_of_a_long_recording_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("field");
    // A long recording: a chirp, hum for a while, then another chirp (further apart than the
    // encoder's 5 s window).
    let mut rng = SeededRng::new(11);
    let mut parts = vec![synthesise("chirp-up", &mut rng)];
    parts.extend((0..5).map(|_| synthesise("hum", &mut rng)));
    parts.push(synthesise("chirp-up", &mut rng));
    let recording = folder.join("long").join("dawn-recording.wav");
    let files = demo_sounds_and(&folder, 2, &recording, &parts);
    let mut h = harness(dir.path());
    h.state_mut().push(Command::Dropped(vec![folder]));
    wait_for_index(&mut h, files.len());
    let query = dir.path().join("query.wav");
    write_wav(&query, &synthesise("chirp-up", &mut SeededRng::new(12))).unwrap();
    let moments = |app: &EarshotApp| -> Vec<(f64, f64)> {
        (app.results.iter())
            .filter(|r| r.hit.path == recording)
            .map(|r| (r.hit.start_s, r.hit.end_s))
            .collect()
    };

    h.state_mut().push(Command::QueryFile(query, None));
    wait_for(&mut h, "results", |app| !app.results.is_empty());
    assert_eq!(moments(h.state()).len(), 1);
    h.state_mut().settings.moments_per_file = 3;
    h.state_mut().push(Command::Search);
    wait_for(&mut h, "more moments", |app| moments(app).len() > 1);
    let mut found = moments(h.state());
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Moments of their own, not overlapping.
    assert!(
        found.windows(2).all(|w| w[0].1 <= w[1].0 + 1e-6),
        "{found:?}"
    );

    // The inspector outlines the whole recording with each of its moments marked; a click on
    // a mark selects that result.
    let in_recording: Vec<usize> = (h.state().results.iter().enumerate())
        .filter(|(_, r)| r.hit.path == recording)
        .map(|(i, _)| i)
        .collect();
    h.state_mut().push(Command::SelectResult(in_recording[0]));
    wait_for(&mut h, "the whole file outlined", |app| {
        app.inspector.is_some()
    });
    // Where the encoder looks, in the query and in the result, made in the background.
    let query_map = h.state().query.as_ref().and_then(|q| q.attention.clone());
    assert!(
        query_map
            .flatten()
            .is_some_and(|m| m.rows * m.columns == m.values.len())
    );
    let Some(Ok(inspected)) = &h.state().inspector else {
        panic!("the result is inspected")
    };
    assert!(matches!(inspected.attention, Some(Some(_))));
    h.get_by_label_contains(&format!("{} results marked", in_recording.len()));
    let outline = h.get_by_label("the whole file").rect();
    let duration_s: f64 = parts.iter().map(Vec::len).sum::<usize>() as f64
        / f64::from(earshot::demo::DEMO_SAMPLE_RATE);
    let last = &h.state().results[in_recording[in_recording.len() - 1]].hit;
    let share = ((last.start_s + last.end_s) / 2.0 / duration_s) as f32;
    let at = egui::pos2(outline.left() + outline.width() * share, outline.center().y);
    h.input_mut().events.push(egui::Event::PointerMoved(at));
    h.step();
    for pressed in [true, false] {
        h.input_mut().events.push(egui::Event::PointerButton {
            pos: at,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: egui::Modifiers::NONE,
        });
        h.step();
    }
    h.run_steps(2);
    assert_eq!(
        h.state().selected,
        Some(in_recording[in_recording.len() - 1])
    );
}

#[test]
fn exact_match_groups_every_place_of_a_file_under_its_first_until_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("tapes");
    // A tape where the same warble plays twice, hum between.
    let mut rng = SeededRng::new(21);
    let warble = synthesise("warble", &mut rng);
    let mut parts = vec![warble.clone()];
    parts.extend((0..3).map(|_| synthesise("hum", &mut rng)));
    parts.push(warble.clone());
    let recording = folder.join("tape").join("side-a.wav");
    let files = demo_sounds_and(&folder, 1, &recording, &parts);
    let query = dir.path().join("warble-query.wav");
    write_wav(&query, &warble).unwrap();

    let mut h = harness(dir.path());
    h.state_mut().push(Command::Dropped(vec![folder]));
    wait_for_index(&mut h, files.len());
    h.get_by_label("Exact match").click();
    h.state_mut().push(Command::QueryFile(query, None));
    let places = |app: &EarshotApp| {
        (app.results.iter())
            .filter(|r| r.hit.path == recording && r.hit.found == Some(true))
            .count()
    };
    wait_for(&mut h, "both places", |app| places(app) == 2);
    h.get_by_label_contains("and 1 more place");
    // One row in the table, with a button for the other place (the name also shows in the
    // library's list and the inspector): expanded, a row more; collapsed, as before.
    let named = |h: &Harness<'static, EarshotApp>| h.query_all_by_label("side-a.wav").count();
    let collapsed = named(&h);
    h.get_by_label("+1").click();
    h.run();
    assert_eq!(named(&h), collapsed + 1);
    h.get_by_label("−1").click();
    h.run();
    assert_eq!(named(&h), collapsed);
}

#[test]
fn a_folder_of_clips_searched_in_a_batch_gives_one_table_and_names_a_clip_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    crate::app::open_demo_library(&mut h);
    let clips = dir.path().join("clips");
    let mut rng = SeededRng::new(31);
    std::fs::create_dir_all(&clips).unwrap();
    for class in ["chirp-up", "hum"] {
        write_wav(
            &clips.join(format!("my-{class}.wav")),
            &synthesise(class, &mut rng),
        )
        .unwrap();
    }
    std::fs::write(clips.join("broken.wav"), b"RIFF not really").unwrap();

    assert!(h.query_by_label("Batch…").is_some());
    h.state_mut().push(Command::BatchQuery(clips));
    wait_for(&mut h, "the batch", |app| {
        app.notices
            .last()
            .is_some_and(|n| n.starts_with("searched with"))
    });
    let notice = h.state().notices.last().cloned().unwrap();
    assert!(notice.starts_with("searched with 2 clips"), "{notice}");
    assert!(notice.contains("broken.wav"), "{notice}");
    let table = notice
        .split(", ")
        .find_map(|part| part.split(';').next().filter(|p| p.ends_with(".csv")))
        .map(PathBuf::from)
        .unwrap();
    let csv = std::fs::read_to_string(table).unwrap();
    let queries: std::collections::BTreeSet<&str> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(
        queries.into_iter().collect::<Vec<_>>(),
        ["my-chirp-up.wav", "my-hum.wav"]
    );
    // Every result of both clips: the library's 48 files each.
    assert_eq!(csv.lines().count(), 1 + 2 * 48);

    // The same table in a window; a clip's name there searches with it.
    let table = h
        .state()
        .batch_table
        .as_ref()
        .expect("the batch's table is shown");
    assert_eq!(table.rows.len(), 2 * 48);
    h.run();
    h.get_by_label_contains("Batch results: clips");
    h.get_all_by_label("my-chirp-up.wav")
        .next()
        .unwrap()
        .click();
    wait_for(&mut h, "the clip searched", |app| {
        app.query
            .as_ref()
            .is_some_and(|q| q.clip.name == "my-chirp-up.wav")
            && !app.results.is_empty()
    });
}

/// Where no file chooser can be shown (no display, no portal, no zenity: as in CI), "Add folder…"
/// says so and asks for the path in a window; the folder typed there is added. (On a desktop a
/// real chooser would open and wait: the test runs only without a display.)
#[test]
fn without_a_file_chooser_a_typed_path_adds_the_folder() {
    if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        eprintln!("skipped: a display is set, where a real file chooser could open and wait");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("field");
    let classes = [("chirp-up", "chirp-up"), ("hum", "hum")];
    let files = write_sounds(&folder, &classes, 2, |label, i| format!("{label}-{i}.wav"));
    let mut h = harness(&dir.path().join("data"));
    h.state_mut().push(Command::AddFolderDialog);
    wait_for(&mut h, "the dialog to give up", |app| {
        app.notices
            .iter()
            .any(|n| n.contains("No file dialog could be shown"))
    });
    // The window gives its field the keyboard when it opens.
    h.get_by_label("Type a path");
    h.run();
    h.input_mut()
        .events
        .push(egui::Event::Text(folder.display().to_string()));
    h.run();
    h.get_by_label("OK").click();
    wait_for_index(&mut h, files.len());
}

/// A library moved to a Milvus server: typed in place, indexed there by "Update index", and
/// searched with the same results as its own folder gave.
#[test]
fn a_library_kept_on_a_milvus_server_is_indexed_and_searched_there_alike() {
    let Some(server) = crate::milvus::LiteServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sounds");
    let classes: Vec<(&str, &str)> = DEMO_CLASSES.iter().take(3).map(|c| (*c, *c)).collect();
    let files = write_sounds(&folder, &classes, 3, |label, i| format!("{label}-{i}.wav"));
    let mut h = harness(dir.path());
    h.state_mut().push(Command::Dropped(vec![folder.clone()]));
    wait_for_index(&mut h, files.len());
    let hits = |h: &mut Harness<'static, EarshotApp>| {
        h.state_mut()
            .push(Command::QueryFile(files[0].clone(), None));
        wait_for(h, "results", |app| {
            !app.results.is_empty() && app.query.is_some()
        });
        let app = h.state();
        (app.results.iter())
            .map(|r| (r.hit.path.clone(), r.hit.score))
            .collect::<Vec<_>>()
    };
    let here = hits(&mut h);
    h.get_by_label_contains("index: on this computer");

    h.get_by_label("Server…").click();
    h.run();
    let address = server.db("app");
    h.get_by_label("index on")
        .type_text(&address.to_string_lossy());
    h.run();
    h.key_press(egui::Key::Enter);
    wait_for(&mut h, "the empty server opened", |app| {
        app.libraries.values().all(|l| l.loading.is_none())
    });
    let shown = format!("index: {}", address.display());
    h.get_by_label_contains(&shown);
    assert_eq!(
        h.state().settings.library().unwrap().server.as_ref(),
        Some(&address)
    );
    h.get_by_label("Update index").click();
    wait_for_index(&mut h, files.len());
    h.state_mut().results.clear();
    h.state_mut().query = None;
    assert_eq!(hits(&mut h), here);
}
