"""Every user-facing reply, in English, Russian and Kazakh. One catalogue, one lookup.

Adapters never write reply text of their own: they ask ``text(key, lang, **params)``.
A test checks that every key has all three languages with the same placeholders.
"""

from __future__ import annotations

from typing import Literal

from engine.limits import ASPECTS, MAX_FRAMES, MIN_FRAMES, MODES

Lang = Literal["en", "ru", "kk"]
LANGS: tuple[Lang, ...] = ("en", "ru", "kk")

# /story's options as every help text shows them, from the one declaration of the rules
_STORY_OPTIONS = (f"[--mode {'|'.join(MODES)}] [--frames {MIN_FRAMES}-{MAX_FRAMES}] [--seed N] "
                  f"[--aspect {'|'.join(ASPECTS)}] [--no-lora]")

CATALOGUE: dict[str, dict[str, str]] = {
    "help": {
        "en": (
            "I draw a storyboard of Aldar Kose, the beardless trickster, from your story.\n"
            "  /story <text> " + _STORY_OPTIONS + "\n"
            "  /status [job]   /cancel <job>   /regen <job> [frame]   /mystats   /help\n"
            "Your own character: send a picture with /story (as the photo's caption, or the image option); "
            "--no-lora draws it without Aldar Kose's look.\n"
            "Example: /story Aldar Kose tricks a greedy merchant at the bazaar"
        ),
        "ru": (
            "Я рисую раскадровку об Алдаре Косе, безбородом хитреце, по вашей истории.\n"
            "  /story <текст> " + _STORY_OPTIONS + "\n"
            "  /status [задача]   /cancel <задача>   /regen <задача> [кадр]   /mystats   /help\n"
            "Свой персонаж: пришлите картинку вместе с /story (подписью к фото или в поле image); "
            "--no-lora рисует его без облика Алдара Косе.\n"
            "Пример: /story Алдар Косе обманывает жадного купца на базаре"
        ),
        "kk": (
            "Мен сіздің әңгімеңіз бойынша сақалсыз айлакер Алдар Көсе туралы раскадровка саламын.\n"
            "  /story <мәтін> " + _STORY_OPTIONS + "\n"
            "  /status [тапсырма]   /cancel <тапсырма>   /regen <тапсырма> [кадр]   /mystats   /help\n"
            "Өз кейіпкеріңіз: суретті /story-мен бірге жіберіңіз (фото жазуы ретінде немесе image өрісінде); "
            "--no-lora оны Алдар Көсенің бейнесінсіз салады.\n"
            "Мысал: /story Алдар Көсе базарда сараң саудагерді алдайды"
        ),
    },
    "queued": {
        "en": "🧾 Job #{job} is queued, position {position}. I will post the storyboard here.",
        "ru": "🧾 Задача #{job} в очереди, место {position}. Я пришлю раскадровку сюда.",
        "kk": "🧾 #{job} тапсырма кезекте, орны {position}. Раскадровканы осында жіберемін.",
    },
    "progress_planning": {
        "en": "✍️ Job #{job}: planning the shots…",
        "ru": "✍️ Задача #{job}: планирую кадры…",
        "kk": "✍️ #{job} тапсырма: кадрларды жоспарлап жатырмын…",
    },
    "progress_frame": {
        "en": "🎨 Job #{job}: drawing frame {frame} of {total}…",
        "ru": "🎨 Задача #{job}: рисую кадр {frame} из {total}…",
        "kk": "🎨 #{job} тапсырма: {total} кадрдың {frame}-кадрын салып жатырмын…",
    },
    "progress_frames": {
        "en": "🎨 Job #{job}: drawing frames {frame}–{last} of {total}…",
        "ru": "🎨 Задача #{job}: рисую кадры {frame}–{last} из {total}…",
        "kk": "🎨 #{job} тапсырма: {total} кадрдың {frame}–{last} кадрларын салып жатырмын…",
    },
    "progress_step": {
        "en": "🎨 Job #{job}: frames {frame}–{last} of {total}, step {step}/{steps}",
        "ru": "🎨 Задача #{job}: кадры {frame}–{last} из {total}, шаг {step}/{steps}",
        "kk": "🎨 #{job} тапсырма: {total} кадрдың {frame}–{last} кадрлары, {step}/{steps} қадам",
    },
    "progress_validating": {
        "en": "🔎 Job #{job}: checking frame {frame} of {total}…",
        "ru": "🔎 Задача #{job}: проверяю кадр {frame} из {total}…",
        "kk": "🔎 #{job} тапсырма: {total} кадрдың {frame}-кадрын тексеріп жатырмын…",
    },
    "progress_composing": {
        "en": "🧩 Job #{job}: putting the storyboard together…",
        "ru": "🧩 Задача #{job}: собираю раскадровку…",
        "kk": "🧩 #{job} тапсырма: раскадровканы құрастырып жатырмын…",
    },
    "done": {
        "en": "✅ Job #{job} is done: {title} ({frames} frames)",
        "ru": "✅ Задача #{job} готова: {title} ({frames} кадров)",
        "kk": "✅ #{job} тапсырма дайын: {title} ({frames} кадр)",
    },
    "job_failed": {
        "en": "❌ Job #{job} failed ({error}). Please try again; a moderator can see the details.",
        "ru": "❌ Задача #{job} не удалась ({error}). Попробуйте ещё раз; модератор видит подробности.",
        "kk": "❌ #{job} тапсырма орындалмады ({error}). Қайта көріңіз; модератор толығын көре алады.",
    },
    "job_cancelled": {
        "en": "🛑 Job #{job} was cancelled.",
        "ru": "🛑 Задача #{job} отменена.",
        "kk": "🛑 #{job} тапсырма тоқтатылды.",
    },
    "engine_unavailable": {
        "en": "⏸ Job #{job} is waiting: the drawing engine is unavailable right now. "
              "The job stays in the queue and starts as soon as the engine is back.",
        "ru": "⏸ Задача #{job} ждёт: движок рисования сейчас недоступен. "
              "Задача остаётся в очереди и начнётся, как только он вернётся.",
        "kk": "⏸ #{job} тапсырма күтуде: сурет салу қозғалтқышы қазір қолжетімсіз. "
              "Тапсырма кезекте қалады және ол оралған бойда басталады.",
    },
    "cancel_requested": {
        "en": "🛑 Job #{job} will stop after the current frame.",
        "ru": "🛑 Задача #{job} остановится после текущего кадра.",
        "kk": "🛑 #{job} тапсырма ағымдағы кадрдан кейін тоқтайды.",
    },
    "status_line": {
        "en": "Job #{job}: {status}{detail}",
        "ru": "Задача #{job}: {status}{detail}",
        "kk": "#{job} тапсырма: {status}{detail}",
    },
    "status_queued": {"en": "queued, position {position}", "ru": "в очереди, место {position}", "kk": "кезекте, орны {position}"},
    "status_running": {"en": "being drawn", "ru": "рисуется", "kk": "салынып жатыр"},
    "status_done": {"en": "done", "ru": "готова", "kk": "дайын"},
    "status_failed": {"en": "failed", "ru": "не удалась", "kk": "орындалмады"},
    "status_cancelled": {"en": "cancelled", "ru": "отменена", "kk": "тоқтатылды"},
    "mystats": {
        "en": "📊 Jobs submitted: {submitted}; boards delivered: {delivered}; refused: {refusals}; "
        "waiting now: {queued}, you can queue {remaining} more.",
        "ru": "📊 Отправлено задач: {submitted}; получено раскадровок: {delivered}; отказов: {refusals}; "
        "сейчас в очереди: {queued}, можно добавить ещё {remaining}.",
        "kk": "📊 Жіберілген тапсырмалар: {submitted}; алынған раскадровкалар: {delivered}; бас тартулар: {refusals}; "
        "қазір кезекте: {queued}, тағы {remaining} қосуға болады.",
    },
    "banned_ok": {
        "en": "🔨 {user} is banned; {cancelled} queued job(s) cancelled.",
        "ru": "🔨 {user} заблокирован; отменено задач в очереди: {cancelled}.",
        "kk": "🔨 {user} бұғатталды; кезектегі {cancelled} тапсырма тоқтатылды.",
    },
    "unbanned_ok": {
        "en": "✅ {user} is unbanned.",
        "ru": "✅ {user} разблокирован.",
        "kk": "✅ {user} бұғаттан шығарылды.",
    },
    "queue_empty": {"en": "The queue is empty.", "ru": "Очередь пуста.", "kk": "Кезек бос."},
    "queue_header": {
        "en": "📋 {count} job(s) waiting or running:",
        "ru": "📋 Задач в очереди и в работе: {count}",
        "kk": "📋 Кезектегі және орындалып жатқан тапсырмалар: {count}",
    },
    "queue_line": {
        "en": "#{job} {owner}: {status} — {story}",
        "ru": "#{job} {owner}: {status} — {story}",
        "kk": "#{job} {owner}: {status} — {story}",
    },
    "queue_more": {
        "en": "… and {count} more.",
        "ru": "… и ещё {count}.",
        "kk": "… және тағы {count}.",
    },
    "button_regenerate": {"en": "🔁 Regenerate", "ru": "🔁 Перерисовать", "kk": "🔁 Қайта салу"},
    "button_frames": {"en": "Frame…", "ru": "Кадр…", "kk": "Кадр…"},
    "button_full": {"en": "📎 Full resolution", "ru": "📎 Полный размер", "kk": "📎 Толық өлшем"},
    "button_back": {"en": "◀ Back", "ru": "◀ Назад", "kk": "◀ Артқа"},
    "button_pdf": {"en": "📄 PDF", "ru": "📄 PDF", "kk": "📄 PDF"},
    "button_animatic": {"en": "🎞 Animatic", "ru": "🎞 Аниматик", "kk": "🎞 Аниматик"},
    "export_making": {
        "en": "⏳ Making the {kind} of board #{job}; it follows in a moment.",
        "ru": "⏳ Готовлю {kind} раскадровки #{job}; сейчас пришлю.",
        "kk": "⏳ #{job} раскадровканың {kind} файлын дайындап жатырмын; қазір жіберемін.",
    },
    "export_caption": {
        "en": "{title}\nJob #{job} · {kind}",
        "ru": "{title}\nЗадача #{job} · {kind}",
        "kk": "{title}\n#{job} тапсырма · {kind}",
    },
    "board_caption": {
        "en": "{title}\nJob #{job} · {frames} frames · {mode} · seed {seed}",
        "ru": "{title}\nЗадача #{job} · кадров: {frames} · {mode} · seed {seed}",
        "kk": "{title}\n#{job} тапсырма · {frames} кадр · {mode} · seed {seed}",
    },
    "purged_ok": {
        "en": "🗑 Job #{job} is deleted: its board, frames and records.",
        "ru": "🗑 Задача #{job} удалена: раскадровка, кадры и записи.",
        "kk": "🗑 #{job} тапсырма жойылды: раскадровкасы, кадрлары және жазбалары.",
    },
    "queue_paused_disk": {
        "en": "⏸ New boards are paused: the server is short of disk space. Yours keeps its place.",
        "ru": "⏸ Новые раскадровки на паузе: на сервере мало места. Ваша очередь сохранится.",
        "kk": "⏸ Жаңа раскадровкалар тоқтатылды: серверде орын аз. Кезегіңіз сақталады.",
    },
    "err_bad_button": {
        "en": "This button is not valid any more.",
        "ru": "Эта кнопка больше не работает.",
        "kk": "Бұл батырма енді жарамсыз.",
    },
    "err_board_gone": {
        "en": "This board no longer exists.",
        "ru": "Этой раскадровки больше нет.",
        "kk": "Бұл раскадровка енді жоқ.",
    },
    "err_need_reply_or_id": {
        "en": "Give a user id, or reply to one of the user's messages.",
        "ru": "Укажите id пользователя или ответьте на его сообщение.",
        "kk": "Пайдаланушы id-ін жазыңыз немесе оның хабарламасына жауап беріңіз.",
    },
    "err_anonymous_sender": {
        "en": "Please write as yourself, not anonymously or as a channel: limits and bans here are per person.",
        "ru": "Пишите от своего имени, а не анонимно или от канала: лимиты и блокировки здесь личные.",
        "kk": "Анонимді немесе арна атынан емес, өз атыңыздан жазыңыз: мұндағы шектеулер мен бұғаттаулар жеке.",
    },
    "err_empty": {
        "en": "Please write a story after /story, e.g. /story Aldar Kose tricks a greedy merchant.",
        "ru": "Напишите историю после /story, например: /story Алдар Косе обманывает жадного купца.",
        "kk": "/story командасынан кейін әңгіме жазыңыз, мысалы: /story Алдар Көсе сараң байды алдайды.",
    },
    "err_too_long": {
        "en": "Your story is {length} characters long; the limit is {max}. Please shorten it.",
        "ru": "В вашей истории {length} символов, а можно не больше {max}. Сократите её, пожалуйста.",
        "kk": "Әңгімеңізде {length} таңба бар, ал шегі {max}. Қысқартыңыз.",
    },
    "err_no_letters": {
        "en": "I need a story with words in it, not only symbols or emoji.",
        "ru": "Нужна история со словами, а не только символы или эмодзи.",
        "kk": "Маған тек белгілер мен эмодзи емес, сөздері бар әңгіме керек.",
    },
    "err_control_chars": {
        "en": "Your story contains invisible control characters; please send plain text.",
        "ru": "В истории есть невидимые управляющие символы; пришлите обычный текст.",
        "kk": "Әңгімеде көрінбейтін басқару таңбалары бар; қарапайым мәтін жіберіңіз.",
    },
    "err_banned_terms": {
        "en": "Sorry, I can't draw that story: it contains words this community does not allow.",
        "ru": "Извините, эту историю нарисовать нельзя: в ней есть запрещённые в сообществе слова.",
        "kk": "Кешіріңіз, бұл әңгімені сала алмаймын: онда қауымдастықта тыйым салынған сөздер бар.",
    },
    "err_user_banned": {
        "en": "You are banned from this bot. Ask a moderator if you think this is a mistake.",
        "ru": "Вы заблокированы в этом боте. Обратитесь к модератору, если это ошибка.",
        "kk": "Сіз бұл ботта бұғатталғансыз. Қате деп ойласаңыз, модераторға жазыңыз.",
    },
    "err_queue_full": {
        "en": "You already have {max} job(s) waiting. Please wait for one to finish.",
        "ru": "У вас уже {max} задач(и) в очереди. Дождитесь, пока одна завершится.",
        "kk": "Сізде кезекте {max} тапсырма бар. Біреуі аяқталғанша күтіңіз.",
    },
    "err_queue_busy": {
        "en": "The queue is full right now ({max} boards waiting). Please try again a little later.",
        "ru": "Очередь сейчас заполнена ({max} раскадровок ждут). Попробуйте чуть позже.",
        "kk": "Кезек қазір толы ({max} раскадровка күтіп тұр). Сәл кейінірек қайталаңыз.",
    },
    "err_chat_queue_full": {
        "en": "This chat already has {max} boards waiting. Please wait for some of them to finish.",
        "ru": "В этом чате уже ждут {max} раскадровок. Дождитесь, пока часть из них будет готова.",
        "kk": "Бұл чатта {max} раскадровка күтіп тұр. Олардың біразы дайын болғанша күтіңіз.",
    },
    "err_daily_quota": {
        "en": "You have used your {max} boards for the last 24 hours. Try again in {hours} h {minutes} min.",
        "ru": "Вы использовали свои {max} раскадровок за последние 24 часа. Попробуйте через {hours} ч {minutes} мин.",
        "kk": "Соңғы 24 сағаттағы {max} раскадровкаңызды пайдаландыңыз. {hours} сағ {minutes} мин кейін қайталаңыз.",
    },
    "err_regen_budget": {
        "en": "Your regenerations in the last 24 hours have used {used} of {max} renders, and this one may "
              "take up to {cost}. Try a single frame, or try again later.",
        "ru": "Ваши перерисовки за последние 24 часа заняли {used} из {max} рендеров, а эта может занять до "
              "{cost}. Перерисуйте один кадр или попробуйте позже.",
        "kk": "Соңғы 24 сағаттағы қайта салуларыңыз {max} рендердің {used}-ін алды, ал бұл {cost} дейін алуы "
              "мүмкін. Бір кадрды қайта салыңыз немесе кейінірек қайталаңыз.",
    },
    "err_export_failed": {
        "en": "⚠️ I could not make the {kind} of board #{job}: {reason}. The board itself is unchanged.",
        "ru": "⚠️ Не получилось сделать {kind} раскадровки #{job}: {reason}. Сама раскадровка не изменилась.",
        "kk": "⚠️ #{job} раскадровканың {kind} файлын жасай алмадым: {reason}. Раскадровканың өзі өзгерген жоқ.",
    },
    "err_resend_cooldown": {
        "en": "I have just sent you full-resolution files. You can ask again in {seconds} s.",
        "ru": "Я только что отправил файлы в полном размере. Снова можно через {seconds} с.",
        "kk": "Толық өлшемді файлдарды жаңа ғана жібердім. Қайта {seconds} с кейін сұрай аласыз.",
    },
    "err_not_your_chat": {
        "en": "Job #{job} belongs to another chat; only its author or a moderator can open it here.",
        "ru": "Задача #{job} из другого чата; открыть её здесь может только автор или модератор.",
        "kk": "#{job} тапсырма басқа чаттікі; оны мұнда тек авторы немесе модератор аша алады.",
    },
    "err_purge_active": {
        "en": "Job #{job} is still queued or running; cancel it first, then purge it.",
        "ru": "Задача #{job} ещё в очереди или выполняется; сначала отмените её, потом удаляйте.",
        "kk": "#{job} тапсырма әлі кезекте немесе орындалып жатыр; алдымен тоқтатып, содан кейін жойыңыз.",
    },
    "err_not_found": {
        "en": "There is no job #{job}.",
        "ru": "Задачи #{job} нет.",
        "kk": "#{job} тапсырма жоқ.",
    },
    "err_no_jobs": {
        "en": "You have no jobs yet. Try /story <text>.",
        "ru": "У вас ещё нет задач. Попробуйте /story <текст>.",
        "kk": "Сізде әлі тапсырма жоқ. /story <мәтін> деп көріңіз.",
    },
    "err_forbidden": {
        "en": "Only the author of job #{job} or a moderator can do that.",
        "ru": "Это может сделать только автор задачи #{job} или модератор.",
        "kk": "Мұны тек #{job} тапсырманың авторы немесе модератор жасай алады.",
    },
    "err_moderators_only": {
        "en": "Only moderators can do that.",
        "ru": "Это доступно только модераторам.",
        "kk": "Мұны тек модераторлар жасай алады.",
    },
    "err_not_cancellable": {
        "en": "Job #{job} is already {status}; there is nothing to cancel.",
        "ru": "Задача #{job} уже {status}; отменять нечего.",
        "kk": "#{job} тапсырма қазірдің өзінде {status}; тоқтататын ештеңе жоқ.",
    },
    "err_not_done": {
        "en": "Job #{job} has no finished storyboard to regenerate yet.",
        "ru": "У задачи #{job} ещё нет готовой раскадровки для перерисовки.",
        "kk": "#{job} тапсырманың қайта салуға дайын раскадровкасы әлі жоқ.",
    },
    "err_picture_too_big": {
        "en": "Your picture is {size} MB; the limit is {max} MB. Please send a smaller one.",
        "ru": "Ваша картинка весит {size} МБ, а можно не больше {max} МБ. Пришлите картинку поменьше.",
        "kk": "Суретіңіз {size} МБ, ал шегі {max} МБ. Кішірек сурет жіберіңіз.",
    },
    "err_picture_unreadable": {
        "en": "I could not read that as a picture. Please send a photo or an image file ({formats}).",
        "ru": "Не могу прочитать это как картинку. Пришлите фото или файл изображения ({formats}).",
        "kk": "Мұны сурет ретінде оқи алмадым. Фото немесе сурет файлын жіберіңіз ({formats}).",
    },
    "err_picture_too_many_pixels": {
        "en": "Your picture has too many pixels (the limit is {max} megapixels). Please send a smaller one.",
        "ru": "В вашей картинке слишком много пикселей (можно до {max} мегапикселей). Пришлите картинку поменьше.",
        "kk": "Суретіңізде пиксель тым көп (шегі {max} мегапиксель). Кішірек сурет жіберіңіз.",
    },
    "err_picture_animated": {
        "en": "That picture is animated. Please send one still picture of your character.",
        "ru": "Эта картинка анимированная. Пришлите одну неподвижную картинку вашего персонажа.",
        "kk": "Бұл сурет қозғалмалы. Кейіпкеріңіздің бір қозғалмайтын суретін жіберіңіз.",
    },
    "err_picture_file": {
        "en": "I cannot read the picture file “{path}”: give --character-image the path of a picture.",
        "ru": "Не могу прочитать файл картинки «{path}»: укажите в --character-image путь к картинке.",
        "kk": "«{path}» сурет файлын оқи алмаймын: --character-image параметріне сурет жолын беріңіз.",
    },
    "err_no_lora_needs_picture": {
        "en": "--no-lora draws your own character, so it needs a picture of them: send one with the story.",
        "ru": "--no-lora рисует вашего персонажа, поэтому нужна его картинка: пришлите её вместе с историей.",
        "kk": "--no-lora сіздің кейіпкеріңізді салады, сондықтан оның суреті керек: әңгімемен бірге жіберіңіз.",
    },
    "note_picture_checks": {
        "en": "ℹ️ In simple mode your picture is what every frame is checked against; add --mode ref-guided to draw from it too.",
        "ru": "ℹ️ В простом режиме с вашей картинкой только сверяется каждый кадр; добавьте --mode ref-guided, чтобы рисовать и по ней.",
        "kk": "ℹ️ Қарапайым режимде әр кадр тек суретіңізбен салыстырылады; сол бойынша салу үшін --mode ref-guided қосыңыз.",
    },
    "note_picture_checks_no_ip_adapter": {
        "en": "ℹ️ This bot has no IP-Adapter loaded, so your picture is used only for the identity check, not for drawing.",
        "ru": "ℹ️ В этом боте не загружен IP-Adapter, поэтому ваша картинка нужна только для проверки сходства, не для рисования.",
        "kk": "ℹ️ Бұл ботта IP-Adapter жүктелмеген, сондықтан суретіңіз тек ұқсастықты тексеру үшін қолданылады, салу үшін емес.",
    },
    "note_picture_inset": {
        "en": "ℹ️ This bot draws sketch previews: your picture is shown in each panel's corner, not drawn or checked.",
        "ru": "ℹ️ Этот бот рисует эскизы: ваша картинка показана в углу каждого кадра, но не рисуется и не сверяется.",
        "kk": "ℹ️ Бұл бот эскиз салады: суретіңіз әр кадрдың бұрышында көрсетіледі, бірақ салынбайды және тексерілмейді.",
    },
    "err_frame_range": {
        "en": "Job #{job} has frames 1 to {frames}; frame {frame} does not exist.",
        "ru": "В задаче #{job} кадры с 1 по {frames}; кадра {frame} нет.",
        "kk": "#{job} тапсырмада 1-ден {frames}-ге дейін кадр бар; {frame}-кадр жоқ.",
    },
    "err_bad_option": {
        "en": "Option {option} must be {allowed}.",
        "ru": "Параметр {option} должен быть: {allowed}.",
        "kk": "{option} параметрі мынадай болуы керек: {allowed}.",
    },
    "err_mode_weights_missing": {
        "en": "The {mode} mode is not available on this bot: its weights did not load ({weights}). "
              "Please use the simple mode.",
        "ru": "Режим {mode} в этом боте недоступен: не загрузились его веса ({weights}). "
              "Используйте режим simple.",
        "kk": "Бұл ботта {mode} режимі қолжетімсіз: оның салмақтары жүктелмеді ({weights}). "
              "simple режимін пайдаланыңыз.",
    },
    "err_mode_switched_off": {
        "en": "The {mode} mode is switched off on this bot. Please use the simple mode.",
        "ru": "Режим {mode} в этом боте отключён. Используйте режим simple.",
        "kk": "Бұл ботта {mode} режимі өшірулі. simple режимін пайдаланыңыз.",
    },
    "err_bad_job_id": {
        "en": "Job numbers are whole numbers, like /status 12.",
        "ru": "Номер задачи — целое число, например /status 12.",
        "kk": "Тапсырма нөмірі бүтін сан, мысалы /status 12.",
    },
    "err_unknown_command": {
        "en": "I don't know that command. Type /help.",
        "ru": "Я не знаю такой команды. Наберите /help.",
        "kk": "Мен бұл команданы білмеймін. /help деп жазыңыз.",
    },
    "err_unknown_user": {
        "en": "I have never seen user {user}.",
        "ru": "Пользователь {user} мне не встречался.",
        "kk": "{user} пайдаланушысын көрмеппін.",
    },
    "err_internal": {
        "en": "Something went wrong on my side. Please try again in a minute.",
        "ru": "У меня что-то пошло не так. Попробуйте через минуту.",
        "kk": "Менде бір қате шықты. Бір минуттан соң қайталаңыз.",
    },
}


def resolve_language(locale: str | None, default: Lang = "en") -> Lang:
    """Map a platform locale ('ru', 'ru-RU', 'kk_KZ', 'en-GB', None) to a catalogue language."""
    if not locale:
        return default
    code = locale.replace("_", "-").split("-", 1)[0].lower()
    return code if code in LANGS else default  # type: ignore[return-value]


def text(key: str, lang: str, **params: object) -> str:
    """The reply ``key`` in ``lang`` (English when the language is unknown), filled in."""
    entry = CATALOGUE[key]
    template = entry.get(lang) or entry["en"]
    return template.format(**params)
