"""Synthetic Korean dialogue-summarization data in the competition's CSV schema.

Why this exists: the real competition data cannot be downloaded here, yet the demo, the tests
and the benchmarks need train/dev/test CSVs (``fname, dialogue, summary``; test without
``summary``) and the demo has to show a model *learning* within minutes on a CPU. Real
summaries are too free-form for that, so here every summary follows deterministically from
the dialogue: it restates the slot values (day, time, place, item, price...) that were
spoken, with speakers named ``#Person1#``/``#Person2#`` as in the real data. A tiny model
trained from scratch can learn that copy-the-slots pattern, so ROUGE moves visibly.

A dialogue is built from a scenario: a list of beats (short exchanges). Every beat line has
several phrasings, optional beats vary the length (4-10 turns, so padding waste is realistic),
and an optional beat may carry a note that becomes the summary's second sentence.
Only the standard library is used so that data can be made before anything else is installed.
"""

from __future__ import annotations

import csv
import os
import random
import string
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

# Slot pools. A template field is filled from the pool named by the field without trailing
# digits ("time2" -> "time"), and no value is used twice in one dialogue, so "{name2}" and
# "{name3}" are different people and "{time2}" really is another time.
POOLS: dict[str, tuple[str, ...]] = {
    "name": (
        "민수", "지은", "서연", "현우", "도윤", "하은", "준호", "수빈", "예린", "태민", "유진",
        "성민", "다은", "재훈", "소희", "동현", "은지", "민재", "지훈", "나연", "승우", "혜진",
    ),
    "surname": ("김", "이", "박", "최", "정", "강", "조", "윤", "장", "한", "오", "서"),
    "day": ("월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일"),
    "time": (
        "오전 10시", "오전 10시 30분", "오전 11시", "낮 12시", "낮 12시 30분", "오후 1시",
        "오후 2시", "오후 2시 30분", "오후 3시", "오후 4시", "오후 5시", "오후 5시 30분",
        "저녁 6시", "저녁 6시 30분", "저녁 7시", "저녁 8시",
    ),
    "meal_time": (
        "낮 12시", "낮 12시 30분", "오후 1시", "저녁 6시", "저녁 6시 30분", "저녁 7시",
        "저녁 7시 30분", "저녁 8시",
    ),
    "date": tuple(f"{m}월 {d}일" for m in range(1, 13) for d in (3, 7, 10, 14, 18, 21, 25, 28)),
    "place": (
        "강남역 카페", "신촌역 3번 출구", "회사 1층 로비", "광화문 서점", "학교 정문 앞",
        "시청역 근처 식당", "홍대 앞 브런치 카페", "잠실역 2번 출구", "회사 근처 카페",
        "여의도 공원 입구",
    ),
    "purpose": ("발표 준비", "프로젝트 회의", "보고서 검토", "신입 교육 계획", "고객 미팅 준비"),
    "restaurant": (
        "바다횟집", "명동칼국수", "소담한정식", "라 스텔라", "청춘삼겹살", "하늘초밥", "진미반점",
        "봄날 비스트로", "한옥 갈비집", "토마토 파스타",
    ),
    "party": ("2명", "3명", "4명", "5명", "6명", "8명", "10명"),
    "seat": ("창가 자리", "룸", "조용한 안쪽 자리", "테라스 자리", "단체석"),
    "item": (
        "운동화", "청바지", "겨울 코트", "가죽 지갑", "백팩", "니트 스웨터", "장우산", "야구 모자",
        "목도리", "텀블러", "원피스", "셔츠",
    ),
    "color": ("검은색", "흰색", "회색", "남색", "베이지색", "빨간색", "하늘색", "갈색"),
    "price": tuple(
        f"{k * 1000:,}원"
        for k in (12, 15, 19, 23, 27, 29, 32, 35, 39, 42, 45, 49, 55, 59, 65, 69, 79, 89, 99, 129)
    ),
    "reason": (
        "사이즈가 맞지 않아서", "생각했던 것과 달라서", "불량이 있어서", "박음질이 풀려 있어서",
        "마음이 바뀌어서",
    ),
    "symptom": (
        "두통", "기침", "복통", "허리 통증", "콧물", "소화불량", "어지럼증", "무릎 통증", "목 통증",
        "몸살",
    ),
    "duration": ("이틀", "사흘", "나흘", "일주일", "3일", "5일", "2주"),
    "rx": ("3일", "5일", "일주일"),
    "dest": ("부산", "강릉", "경주", "여수", "전주", "속초", "통영", "춘천", "목포", "안동"),
    "nights": ("1박 2일", "2박 3일", "3박 4일"),
    "transport": ("기차", "고속버스", "차"),
    "team": ("마케팅팀", "영업팀", "개발팀", "디자인팀", "인사팀", "회계팀", "고객지원팀", "기획팀"),
    "company": ("광고 회사", "스타트업", "은행", "게임 회사", "무역 회사", "출판사", "호텔", "물류 회사"),
    "years": ("1년", "2년", "3년", "4년", "5년", "7년"),
    "salary": ("3,200만 원", "3,500만 원", "3,800만 원", "4,000만 원", "4,500만 원", "5,000만 원"),
    "landmark": ("편의점", "은행", "약국", "주유소", "빵집", "우체국", "큰 사거리", "버스 정류장"),
    "direction": ("왼쪽", "오른쪽"),
    "minutes": ("5분", "10분", "15분", "20분"),
    "bus": ("143", "271", "360", "472", "740", "6015", "7016"),
    "spot": ("시청", "국립중앙박물관", "서울역", "중앙우체국", "시립도서관", "대학병원", "명동성당"),
    "party_place": (
        "학교 앞 피자집", "동네 고깃집", "홍대 파티룸", "노래방", "한강 공원", "볼링장", "동아리방",
    ),
    "prep": ("케이크", "꽃다발", "풍선", "선물", "롤링 페이퍼", "현수막"),
    "task": (
        "수학 확률 문제", "영어 에세이", "과학 실험 보고서", "역사 발표 자료", "국어 독후감",
        "물리 숙제", "화학 문제집", "경제 조별 과제",
    ),
    "due": ("내일", "모레", "이번 주 금요일", "다음 주 월요일"),
    "study_place": ("도서관", "스터디 카페", "학생 식당", "동네 카페", "빈 강의실"),
}

# Korean particles change form after a final consonant (받침). Templates write the
# after-consonant form, e.g. "{item:을}", and get "운동화를" or "가죽 지갑을".
_JOSA_AFTER_VOWEL = {
    "은": "는", "이": "가", "을": "를", "과": "와", "으로": "로", "아": "야", "이라고": "라고",
}
_RIEUL = 8  # index of ㄹ among final consonants; ㄹ takes 로 like a vowel


def _attach_josa(word: str, josa: str) -> str:
    last = word[-1]
    if not "가" <= last <= "힣":
        raise ValueError(f"cannot choose a particle after {word!r}")
    final = (ord(last) - ord("가")) % 28
    if final == 0 or (josa == "으로" and final == _RIEUL):
        return word + _JOSA_AFTER_VOWEL[josa]
    return word + josa


def _fill(template: str, slots: dict[str, str]) -> str:
    parts = []
    for literal, field, josa, _ in string.Formatter().parse(template):
        parts.append(literal)
        if field is not None:
            parts.append(_attach_josa(slots[field], josa) if josa else slots[field])
    return "".join(parts)


@dataclass(frozen=True)
class Beat:
    """Consecutive turns; each line is (speaker, phrasing, phrasing, ...).

    Any phrasing of a line must read naturally after any phrasing of the line before it.
    """

    lines: tuple[tuple, ...]
    optional: bool = False
    note: str = ""  # second summary sentence, used only when this optional beat is included


def core(*lines: tuple) -> Beat:
    return Beat(lines)


def extra(*lines: tuple, note: str = "") -> Beat:
    return Beat(lines, optional=True, note=note)


@dataclass
class Scenario:
    summary: str
    beats: tuple[Beat, ...]

    @cached_property
    def fields(self) -> list[str]:
        templates = [self.summary]
        for beat in self.beats:
            templates.append(beat.note)
            templates.extend(p for _, *phrasings in beat.lines for p in phrasings)
        names = {f for t in templates for _, f, _, _ in string.Formatter().parse(t) if f}
        return sorted(names)  # sorted: slot draws must not depend on set order


GREETING_POLITE = extra(
    (1, "{name2} 씨, 안녕하세요. 요즘 잘 지내요?", "{name2} 씨, 오랜만이에요. 잘 지냈어요?",
        "{name2} 씨, 좋은 아침이에요. 별일 없죠?"),
    (2, "네, 잘 지내요. 무슨 일 있어요?", "덕분에 잘 지냈어요. 무슨 일이세요?",
        "네, 별일 없어요. 무슨 일인데요?"),
)
GREETING_CASUAL = extra(
    (1, "{name2:아}, 뭐 해?", "{name2:아}, 지금 잠깐 시간 돼?"),
    (2, "그냥 쉬고 있었어. 왜?", "별거 안 해. 무슨 일이야?"),
)

SCENARIOS: tuple[Scenario, ...] = (
    # Meeting appointment, accepted as proposed.
    Scenario(
        summary="#Person1#은 #Person2#에게 {day} {time}에 {place}에서 만나자고 제안하고, #Person2#는 동의한다.",
        beats=(
            GREETING_POLITE,
            core(
                (1, "이번 주 {day}에 시간 괜찮아요?", "혹시 {day}에 잠깐 볼 수 있을까요?",
                    "{day}에 일정 어떻게 돼요?"),
                (2, "{day}요? 그날은 특별한 일정이 없어요.", "{day}에는 시간이 돼요.",
                    "{day:은} 괜찮아요."),
            ),
            extra(
                (1, "{purpose} 때문에 같이 얘기 좀 하고 싶어서요.",
                    "{purpose} 건으로 잠깐 이야기 나누고 싶어요."),
                (2, "아, 그거요. 안 그래도 저도 얘기하고 싶었어요.", "좋아요. 저도 궁금한 게 있었어요."),
            ),
            core(
                (1, "그럼 {time}에 {place}에서 만날까요?", "{time}쯤 {place}에서 보는 거 어때요?",
                    "{place}에서 {time}에 만나면 어떨까요?"),
                (2, "좋아요. 그때 거기서 봬요.", "네, 좋아요. {time}까지 갈게요.", "괜찮네요. 그렇게 해요."),
            ),
            extra(
                (1, "그날 관련 자료도 같이 보면 좋겠어요.", "혹시 지난번 자료도 가져올 수 있어요?"),
                (2, "네, 필요한 자료는 제가 챙겨 갈게요.", "그럼 관련 자료는 제가 준비해서 갈게요."),
                note="#Person2#는 관련 자료를 챙겨 가겠다고 한다.",
            ),
        ),
    ),
    # Meeting appointment with a counter-proposal: the summary must keep the agreed time.
    Scenario(
        summary="#Person1#은 #Person2#에게 {day} {time}에 만나자고 했지만 #Person2#가 그 시간에는 어렵다고 해서, "
        "두 사람은 {time2}에 {place}에서 만나기로 한다.",
        beats=(
            GREETING_POLITE,
            core(
                (1, "{day}에 {place}에서 만날래요? {time} 어때요?",
                    "{day} {time}에 {place}에서 볼 수 있을까요?",
                    "{place}에서 {day} {time}에 만나는 거 어때요?"),
                (2, "미안해요, 그 시간에는 회의가 있어요.", "아, 그때는 병원 예약이 있어서 어려워요.",
                    "그 시간은 좀 곤란해요. 다른 약속이 있거든요."),
            ),
            core(
                (1, "그럼 몇 시가 괜찮아요?", "그럼 언제가 편해요?"),
                (2, "{time2:은} 어때요?", "{time2}쯤이면 괜찮을 것 같아요.", "{time2}에는 시간이 돼요."),
            ),
            extra(
                (1, "{place} 위치는 알죠?", "{place} 어딘지 알아요?"),
                (2, "네, 전에 가 본 적 있어요.", "네, 지도 보고 찾아갈게요."),
            ),
            core(
                (1, "좋아요. 그럼 {time2}에 {place}에서 봬요.", "알겠어요. {time2}에 만나요.",
                    "네, 그렇게 해요. {time2}에 {place}에서 기다릴게요."),
                (2, "네, 그때 봬요.", "좋아요. 늦지 않게 갈게요.", "시간 맞춰 줘서 고마워요."),
            ),
        ),
    ),
    # Restaurant reservation by phone; the restaurant answers first.
    Scenario(
        summary="#Person2#는 {restaurant}에 전화해 {date} {meal_time}에 {party} 자리를 예약한다.",
        beats=(
            core(
                (1, "감사합니다, {restaurant}입니다.", "네, {restaurant}입니다. 무엇을 도와드릴까요?",
                    "안녕하세요, {restaurant}입니다."),
                (2, "예약을 하고 싶은데요. {date} {meal_time}에 자리 있나요?",
                    "{date} {meal_time}에 예약 가능할까요?", "안녕하세요. {date} {meal_time:으로} 예약하려고요."),
            ),
            core(
                (1, "확인해 보겠습니다. 몇 분이세요?", "네, 가능합니다. 몇 분이 오시나요?",
                    "잠시만요. 네, 자리 있습니다. 인원은 어떻게 되세요?"),
                (2, "{party}입니다.", "모두 {party}이에요.", "{party}이 갈 거예요."),
            ),
            extra(
                (1, "혹시 원하시는 자리가 있으세요?", "좌석 요청 사항 있으실까요?"),
                (2, "{seat:으로} 부탁드려요.", "가능하면 {seat:으로} 주세요."),
                note="#Person2#는 {seat:을} 요청한다.",
            ),
            core(
                (1, "예약자 성함이 어떻게 되세요?", "성함 부탁드립니다."),
                (2, "{surname}{name2}입니다.", "{surname}{name2:으로} 해 주세요."),
            ),
            extra(
                (1, "{surname}{name2} 님, {date} {meal_time}에 {party} 예약되었습니다.",
                    "네, 예약 완료되었습니다. 그날 뵙겠습니다."),
                (2, "감사합니다.", "고맙습니다. 그때 뵐게요."),
            ),
        ),
    ),
    # Shopping; the clerk speaks first.
    Scenario(
        summary="#Person2#는 매장에서 {color} {item:을} 보고, {price}에 사기로 한다.",
        beats=(
            core(
                (1, "어서 오세요. 찾으시는 거 있으세요?", "안녕하세요. 도와드릴까요?",
                    "어서 오세요. 찾는 물건 있으면 말씀해 주세요."),
                (2, "{item:을} 좀 보려고요.", "{item:을} 사러 왔는데요.", "혹시 {item} 있나요?"),
            ),
            core(
                (1, "네, 이쪽에 있습니다. 생각하시는 색상이 있으세요?", "이쪽으로 오세요. 어떤 색으로 보여 드릴까요?"),
                (2, "{color:으로} 보고 싶어요.", "{color:이} 좋을 것 같아요.", "{color:으로} 있나요?"),
            ),
            extra(
                (1, "이건 이번 시즌 신상품이에요.", "요즘 이 제품이 제일 잘 나가요."),
                (2, "디자인이 마음에 드네요.", "생각보다 괜찮네요."),
            ),
            core(
                (1, "여기 {color} 제품 있습니다. 가격은 {price}입니다.", "이 {color} {item:은} {price}이에요."),
                (2, "좋네요. 이걸로 할게요.", "그럼 이걸로 살게요. 카드 되죠?", "괜찮네요. 이걸로 주세요."),
            ),
            extra(
                (1, "혹시 선물하실 건가요? 포장해 드릴까요?", "선물용이면 포장해 드릴 수 있어요."),
                (2, "네, 포장해 주세요.", "아, 그럼 포장 부탁드려요."),
                note="#Person2#는 선물 포장을 부탁한다.",
            ),
        ),
    ),
    # Doctor visit; the doctor speaks first.
    Scenario(
        summary="#Person2#는 {duration}째 계속된 {symptom:으로} 병원에 왔고, 의사인 #Person1#은 {rx}치 약을 처방한다.",
        beats=(
            core(
                (1, "어서 오세요. 어디가 불편하세요?", "안녕하세요. 어떻게 오셨어요?",
                    "앉으세요. 어디가 아파서 오셨어요?"),
                (2, "{duration}째 {symptom:이} 계속돼서요.", "{symptom} 때문에 왔어요. {duration}째 낫질 않네요.",
                    "{duration}째 {symptom:이} 심해서 왔어요."),
            ),
            extra(
                (1, "열은 없으세요?", "다른 증상은 없으세요?"),
                (2, "그건 괜찮은데 밤에 잠을 잘 못 자요.", "특별히 없는데 좀 피곤해요."),
            ),
            core(
                (1, "진찰해 볼게요. 심하지는 않은 것 같아요.", "한번 볼게요. 큰 문제는 없어 보이네요."),
                (2, "다행이네요. 약을 먹어야 하나요?", "그렇군요. 약을 먹으면 괜찮아질까요?"),
            ),
            core(
                (1, "{rx}치 약을 처방해 드릴게요. 하루 세 번 식후에 드세요.",
                    "네, {rx}치 약을 드릴 테니 식후 30분에 드세요."),
                (2, "네, 감사합니다.", "알겠습니다. 고맙습니다."),
            ),
            extra(
                (1, "그리고 물을 많이 드시고 푹 쉬세요.", "무리하지 마시고 충분히 쉬셔야 해요."),
                (2, "네, 그렇게 할게요.", "네, 조심할게요."),
                note="#Person1#은 #Person2#에게 푹 쉬라고 조언한다.",
            ),
        ),
    ),
    # Travel plans between friends.
    Scenario(
        summary="#Person1#과 #Person2#는 {date}부터 {nights} 동안 {transport:을} 타고 {dest:으로} 여행을 가기로 한다.",
        beats=(
            GREETING_CASUAL,
            core(
                (1, "우리 {date}부터 {nights:으로} {dest} 여행 갈래?",
                    "{date}부터 {nights} 동안 {dest:으로} 놀러 가는 거 어때?",
                    "이번에 {dest:으로} {nights} 여행 가자. {date}에 출발하면 어때?"),
                (2, "좋아! 안 그래도 {dest} 가 보고 싶었어.", "{dest}? 완전 좋지.", "오, 좋다. 그때 나도 시간 돼."),
            ),
            extra(
                (1, "날씨가 좋았으면 좋겠다.", "벌써 설렌다."),
                (2, "그러게. 바다도 보고 맛있는 것도 먹자.", "나도. 가서 맛집 투어 하자."),
            ),
            core(
                (1, "뭐 타고 갈까? 난 {transport:이} 편할 것 같은데.", "교통편은 {transport:이} 어때?"),
                (2, "그래, {transport:으로} 가자.", "좋아, {transport} 타고 가자."),
            ),
            extra(
                (1, "숙소는 어떻게 하지?", "숙소는 누가 알아볼래?"),
                (2, "숙소는 내가 알아볼게.", "그건 내가 할게. 괜찮은 곳 찾아볼게."),
                note="#Person2#는 숙소를 알아보기로 한다.",
            ),
        ),
    ),
    # Job interview; the interviewer speaks first.
    Scenario(
        summary="#Person2#는 {team} 면접에서 {company}에서 {years} 동안 일한 경력을 소개하고, "
        "#Person1#은 다음 주 {day}까지 결과를 이메일로 알려 주겠다고 한다.",
        beats=(
            core(
                (1, "안녕하세요. 먼저 간단하게 자기소개 부탁드립니다.", "반갑습니다. 자기소개를 해 주시겠어요?"),
                (2, "안녕하세요, {surname}{name2}입니다. {company}에서 {years} 동안 일했습니다.",
                    "{surname}{name2:이라고} 합니다. {company}에서 {years} 동안 근무했습니다."),
            ),
            extra(
                (1, "{company}에서는 주로 어떤 일을 하셨어요?", "이전 직장에서 맡았던 업무를 말씀해 주세요."),
                (2, "주로 고객 데이터를 분석하고 보고서를 작성했습니다.", "여러 팀과 협업하는 프로젝트를 맡았습니다."),
            ),
            core(
                (1, "저희 {team}에 지원하신 이유가 무엇인가요?", "왜 {team:을} 선택하셨나요?"),
                (2, "{company}에서 쌓은 경험을 {team}에서 살리고 싶습니다.",
                    "이전 회사에서 배운 것을 {team}에서 더 키워 보고 싶어서 지원했습니다."),
            ),
            extra(
                (1, "희망 연봉은 어느 정도인가요?", "연봉은 어느 정도 생각하고 계세요?"),
                (2, "{salary} 정도를 생각하고 있습니다.", "{salary} 선이면 좋겠습니다."),
                note="#Person2#는 희망 연봉으로 {salary:을} 제시한다.",
            ),
            core(
                (1, "수고하셨습니다. 결과는 다음 주 {day}까지 이메일로 알려 드리겠습니다.",
                    "오늘 면접은 여기까지입니다. 다음 주 {day}까지 결과를 이메일로 보내 드릴게요."),
                (2, "감사합니다. 연락 기다리겠습니다.", "네, 오늘 감사했습니다."),
            ),
        ),
    ),
    # Returning an item for a refund.
    Scenario(
        summary="#Person1#은 {reason} 지난주 {day}에 산 {item:을} 반품하고, #Person2#는 {price:을} 카드로 환불해 준다.",
        beats=(
            extra(
                (1, "저기요, 잠깐 괜찮으세요?", "실례합니다, 여기 직원분이시죠?"),
                (2, "네, 무엇을 도와드릴까요?", "네, 말씀하세요."),
            ),
            core(
                (1, "지난주 {day}에 여기서 {item:을} 샀는데 환불하고 싶어요.",
                    "지난주 {day}에 산 {item:을} 반품하려고 왔어요."),
                (2, "혹시 무슨 문제가 있으셨나요?", "어떤 이유로 반품하시려는 건가요?"),
            ),
            core(
                (1, "{reason} 그래요.", "사실 {reason} 돌려드리고 싶어요."),
                (2, "영수증 가지고 계세요?", "구매하신 영수증 있으신가요?"),
            ),
            core(
                (1, "네, 여기 있어요.", "네, 카드 영수증 여기요."),
                (2, "확인했습니다. {price} 카드로 환불해 드릴게요.",
                    "네, 결제하신 카드로 {price} 환불 처리해 드리겠습니다."),
            ),
            extra(
                (1, "환불은 언제쯤 들어오나요?", "카드 취소는 바로 되나요?"),
                (2, "카드사에 따라 며칠 걸릴 수 있어요.", "보통 사흘에서 닷새 정도 걸립니다."),
                note="#Person2#는 환불이 들어오기까지 며칠 걸릴 수 있다고 안내한다.",
            ),
        ),
    ),
    # Exchanging an item for another colour.
    Scenario(
        summary="#Person1#은 색상이 마음에 들지 않아 지난주 {day}에 산 {item:을} {color:으로} 교환한다.",
        beats=(
            core(
                (1, "지난주 {day}에 산 {item}인데요, 다른 색으로 바꿀 수 있을까요?",
                    "{item:을} 교환하고 싶어서 왔어요. 지난주 {day}에 샀어요."),
                (2, "네, 어떤 문제가 있으신가요?", "교환 사유를 여쭤봐도 될까요?"),
            ),
            core(
                (1, "집에서 보니까 색이 생각했던 것과 달라서요.", "직접 보니 색상이 마음에 들지 않아서요."),
                (2, "그러시군요. 어떤 색으로 바꿔 드릴까요?", "알겠습니다. 원하시는 색상이 있으세요?"),
            ),
            core(
                (1, "{color:으로} 바꿔 주세요.", "{color:이} 있으면 그걸로 할게요."),
                (2, "네, {color} 재고가 있네요. 바로 교환해 드릴게요.",
                    "마침 {color:이} 하나 남아 있어요. 교환해 드리겠습니다."),
            ),
            extra(
                (1, "가격 차이는 없죠?", "추가로 내야 하는 돈이 있나요?"),
                (2, "네, 같은 가격이라 추가 비용은 없습니다.", "같은 제품이라 추가 비용 없이 교환됩니다."),
                note="#Person2#는 추가 비용이 없다고 안내한다.",
            ),
            extra((1, "감사합니다. 수고하세요.", "친절하게 해 주셔서 감사해요.")),
        ),
    ),
    # Asking for directions on the street.
    Scenario(
        summary="#Person1#이 {spot:으로} 가는 길을 묻자, #Person2#는 {landmark}에서 {direction:으로} 돌아 "
        "걸어서 {minutes} 정도 가면 된다고 알려 준다.",
        beats=(
            core(
                (1, "실례합니다. {spot:은} 어떻게 가야 하나요?", "저기요, {spot:으로} 가는 길 좀 알려 주시겠어요?",
                    "죄송한데 {spot:이} 어디에 있는지 아세요?"),
                (2, "{spot}요? 이 길로 쭉 가다가 {landmark}에서 {direction:으로} 도세요.",
                    "네, 여기서 직진하시다가 {landmark}에서 {direction:으로} 꺾으시면 돼요."),
            ),
            extra(
                (1, "{landmark:은} 찾기 쉬운가요?", "{landmark}까지는 금방 찾을 수 있을까요?"),
                (2, "이 길 따라가시면 금방 보여요.", "네, 큰길 쪽에 있어서 찾기 쉬우실 거예요."),
            ),
            core(
                (1, "걸어서 얼마나 걸려요?", "여기서 멀어요?"),
                (2, "{minutes} 정도 걸려요.", "걸어서 {minutes}이면 충분해요."),
            ),
            extra(
                (1, "버스를 타도 되나요?", "혹시 버스로도 갈 수 있나요?"),
                (2, "네, 저기 정류장에서 {bus}번 버스를 타면 두 정거장이에요.", "{bus}번 버스를 타셔도 돼요."),
                note="#Person2#는 {bus}번 버스를 타도 된다고 덧붙인다.",
            ),
            extra((1, "정말 감사합니다.", "친절하게 알려 주셔서 감사해요.")),
        ),
    ),
    # Planning a surprise birthday party between friends.
    Scenario(
        summary="#Person1#과 #Person2#는 다음 주 {day} {meal_time}에 {party_place}에서 {name3:을} 위한 "
        "깜짝 생일 파티를 열기로 한다.",
        beats=(
            GREETING_CASUAL,
            core(
                (1, "다음 주 {day:이} {name3} 생일인 거 알지?", "너 다음 주 {day:이} {name3} 생일인 거 알아?"),
                (2, "응, 알고 있어. 뭐 해 줄까?", "맞다! 깜빡할 뻔했네. 우리 뭐 할까?"),
            ),
            core(
                (1, "깜짝 파티 해 주자. {meal_time}에 {party_place}에서 어때?",
                    "{party_place}에서 {meal_time}에 깜짝 파티 열어 주는 건 어때?"),
                (2, "좋다, 그렇게 하자.", "완전 좋아. {name3} 엄청 놀라겠다."),
            ),
            extra(
                (1, "준비물은 어떻게 나눌까?", "선물이랑 준비물은 어떻게 하지?"),
                (2, "{prep:은} 내가 준비할게.", "내가 {prep:을} 맡을게."),
                note="#Person2#는 {prep:을} 준비하기로 한다.",
            ),
            extra(
                (1, "{name3}한테는 절대 비밀이야.", "{name3}한테 들키면 안 돼."),
                (2, "당연하지. 입 꾹 다물고 있을게.", "알았어, 티 안 낼게."),
            ),
        ),
    ),
    # Asking a classmate for homework help.
    Scenario(
        summary="#Person1#은 {due}까지 내야 하는 {task:을} #Person2#에게 도와 달라고 부탁하고, "
        "두 사람은 오늘 {time}에 {study_place}에서 같이 하기로 한다.",
        beats=(
            GREETING_CASUAL,
            core(
                (1, "{task} 좀 도와줄 수 있어? {due}까지 내야 하는데 잘 모르겠어.",
                    "나 {task} 때문에 큰일 났어. {due}까지 내야 되거든.",
                    "{due}까지 {task:을} 끝내야 하는데 도와줄래?"),
                (2, "그래, 어떤 부분이 어려운데?", "물론이지. 어디서 막혔어?"),
            ),
            core(
                (1, "처음부터 감이 안 잡혀.", "자료를 어떻게 정리해야 할지 모르겠어."),
                (2, "그럼 오늘 {time}에 {study_place}에서 같이 하자.", "오늘 {time}에 {study_place}에서 만나서 같이 보자."),
            ),
            extra(
                (1, "고마워. 뭐 챙겨 가면 돼?", "진짜 고마워. 필요한 거 있어?"),
                (2, "교과서랑 노트만 가져와.", "필기한 노트만 챙겨 와."),
                note="#Person2#는 #Person1#에게 노트를 챙겨 오라고 한다.",
            ),
            extra(
                (1, "대신 내가 음료수 살게.", "끝나면 내가 떡볶이 살게."),
                (2, "좋지. 이따 봐.", "오케이, 이따 보자."),
            ),
        ),
    ),
)


def _draw_slots(fields: list[str], rng: random.Random) -> dict[str, str]:
    slots: dict[str, str] = {}
    for field in fields:
        pool = POOLS[field.rstrip("0123456789")]
        used = set(slots.values())
        slots[field] = rng.choice([v for v in pool if v not in used])
    return slots


def _make_row(rng: random.Random) -> dict[str, str]:
    scenario = rng.choice(SCENARIOS)
    slots = _draw_slots(scenario.fields, rng)
    turns, notes = [], []
    for beat in scenario.beats:
        if beat.optional and rng.random() < 0.5:
            continue
        for speaker, *phrasings in beat.lines:
            turns.append(f"#Person{speaker}#: {_fill(rng.choice(phrasings), slots)}")
        if beat.note:
            notes.append(_fill(beat.note, slots))
    summary = " ".join([_fill(scenario.summary, slots), *notes])
    return {"dialogue": "\n".join(turns), "summary": summary}


def generate_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Return n rows {"dialogue", "summary"} with distinct dialogues, the same for the same seed.

    A longer run with the same seed starts with the rows of a shorter one.
    """
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        row = _make_row(rng)
        if row["dialogue"] not in seen:
            seen.add(row["dialogue"])
            rows.append(row)
    return rows


def _write_csv_atomically(path: Path, columns: list[str], records: list[dict[str, str]]) -> None:
    # A reader (another process, a benchmark) must never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_demo_data(
    out_dir: Path, n_train: int = 2000, n_dev: int = 200, n_test: int = 100, seed: int = 0
) -> dict[str, Path]:
    """Write train.csv, dev.csv and test.csv (no summary column) into out_dir; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One stream of distinct dialogues cut at fixed offsets, so no dialogue is in two splits.
    rows = generate_rows(n_train + n_dev + n_test, seed)
    splits = {
        "train": rows[:n_train],
        "dev": rows[n_train : n_train + n_dev],
        "test": rows[n_train + n_dev :],
    }
    paths = {}
    for split, split_rows in splits.items():
        columns = ["fname", "dialogue"] if split == "test" else ["fname", "dialogue", "summary"]
        records = [{"fname": f"{split}_{i}", **row} for i, row in enumerate(split_rows)]
        paths[split] = out_dir / f"{split}.csv"
        _write_csv_atomically(paths[split], columns, records)
    return paths
