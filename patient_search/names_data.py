"""Name frequency tables for the synthetic population (written by hand, no Faker).

Weights are rough relative frequencies (US Census surname counts and SSA given-name
counts, per ~100k, rounded), so "Smith", "Garcia" and "Nguyen" are as common as they
are at a US front desk. Names are stored here in plain ASCII; `ACCENTED` gives the
accented spelling a record may carry instead ("Jose" -> "José"), so the generator
can write both forms and the query generator can strip or add accents.

Each spec string is "Name weight, Name weight, ...".
"""

from __future__ import annotations

from dataclasses import dataclass


def parse_spec(spec: str) -> tuple[tuple[str, float], ...]:
    """ "Smith 828, de la Cruz 25" -> (("Smith", 828.0), ("de la Cruz", 25.0))."""
    out: list[tuple[str, float]] = []
    for item in spec.replace("\n", " ").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, weight = item.rpartition(" ")
        out.append((name.strip(), float(weight)))
    return tuple(out)


@dataclass(frozen=True)
class Group:
    """One naming tradition: given names by sex, middle names, family names, accent odds."""

    male: str
    female: str
    family: str
    accent_rate: float = 0.0  # share of records keeping the accented spelling
    male_middle: str | None = None  # None: middles are drawn from the given names
    female_middle: str | None = None
    middle_rate: float = 0.65  # share of records with a middle name


ANGLO = Group(
    male="""
James 330, John 325, Robert 315, Michael 300, William 250, David 240, Richard 140,
Joseph 130, Thomas 125, Charles 120, Christopher 110, Daniel 110, Matthew 95, Anthony 80,
Mark 80, Donald 75, Steven 70, Paul 65, Andrew 65, Joshua 65, Kenneth 60, Kevin 60, Brian 60,
George 60, Timothy 50, Ronald 50, Edward 45, Jason 45, Jeffrey 45, Ryan 45, Jacob 45, Gary 40,
Nicholas 40, Eric 40, Jonathan 40, Stephen 40, Larry 35, Justin 35, Scott 35, Brandon 35,
Benjamin 35, Samuel 30, Gregory 30, Alexander 30, Frank 30, Patrick 28, Raymond 28, Jack 25,
Dennis 25, Jerry 25, Tyler 25, Aaron 22, Henry 22, Adam 22, Douglas 20, Nathan 20, Peter 20,
Zachary 20, Kyle 20, Walter 18, Harold 18, Jeremy 18, Ethan 18, Carl 16, Keith 16, Roger 16,
Gerald 16, Christian 15, Terry 15, Sean 15, Arthur 15, Austin 14, Noah 14, Lawrence 14,
Jesse 13, Joe 12, Bryan 12, Billy 12, Jordan 12, Albert 12, Dylan 12, Bruce 11, Willie 11,
Gabriel 11, Alan 11, Logan 10, Wayne 10, Ralph 10, Roy 10, Eugene 10, Randy 10, Vincent 10,
Russell 10, Elijah 9, Louis 9, Bobby 9, Philip 9, Johnny 9, Liam 9, Mason 9, Lucas 8,
Aiden 8, Caleb 8, Hunter 8, Isaac 8, Owen 8, Marcus 8, Theodore 8, Oliver 8, Wyatt 7,
Jayden 7, Leo 7, Andre 6, Xavier 6, DeShawn 5, Darnell 5, Tyrone 5, Jamal 5, Malik 5,
Terrell 5, Elliott 4, Grayson 4, Howard 10, Clarence 8, Earl 8, Francis 8, Glenn 8,
Leonard 8, Stanley 8, Martin 8, Curtis 7, Craig 8, Shawn 7, Travis 7, Chad 6, Derek 6,
Marvin 6, Todd 7, Allen 6, Dale 6, Barry 5, Clifford 5, Vernon 4, Lloyd 4, Calvin 5,
Mitchell 5, Seth 5, Colin 4, Trevor 4, Garrett 4, Miles 4, Silas 3, Ezra 3, Rhett 2
""",
    female="""
Mary 350, Patricia 160, Jennifer 155, Linda 150, Elizabeth 145, Barbara 140, Susan 125,
Jessica 115, Sarah 110, Karen 110, Lisa 100, Nancy 100, Betty 95, Margaret 95, Sandra 90,
Ashley 90, Kimberly 85, Emily 80, Donna 80, Michelle 80, Carol 80, Amanda 75, Dorothy 75,
Melissa 75, Deborah 70, Stephanie 70, Rebecca 65, Sharon 65, Laura 65, Cynthia 60,
Kathleen 60, Amy 60, Angela 60, Shirley 55, Anna 55, Brenda 55, Pamela 50, Emma 50,
Nicole 50, Helen 50, Samantha 45, Katherine 45, Christine 45, Debra 45, Rachel 45,
Carolyn 40, Janet 40, Catherine 40, Heather 40, Diane 40, Ruth 38, Julie 38, Olivia 38,
Joyce 36, Virginia 36, Victoria 35, Kelly 35, Lauren 33, Christina 33, Joan 32, Evelyn 32,
Judith 32, Megan 30, Andrea 30, Cheryl 30, Hannah 30, Jacqueline 28, Martha 28, Gloria 28,
Teresa 28, Ann 27, Sara 27, Madison 27, Frances 26, Kathryn 26, Janice 26, Jean 26,
Abigail 26, Alice 25, Judy 25, Sophia 25, Grace 24, Denise 24, Amber 24, Doris 23,
Marilyn 23, Danielle 23, Beverly 23, Isabella 22, Theresa 22, Diana 22, Natalie 22,
Brittany 22, Charlotte 21, Marie 21, Kayla 20, Alexis 20, Lori 20, Ava 18, Mia 15,
Chloe 12, Zoe 12, Harper 10, Renee 10, Jasmine 10, Rose 10, Eleanor 10, Ella 10, Peggy 8,
Dolores 8, Norma 8, Irene 8, Lillian 8, Claire 8, Audrey 8, Madeline 8, Aaliyah 6,
Ebony 5, Tamika 5, Latoya 5, Keisha 5, Imani 4, Tiffany 10, Crystal 9, Wendy 8,
Tracy 8, Dawn 7, Tammy 8, Connie 6, Stacy 7, Holly 6, Leslie 6, Paula 7, Gail 5, Bonnie 6,
Wanda 5, Yvonne 5, Monique 4, Erica 7, Vanessa 7, Brooke 5, Paige 4, Autumn 3, Layla 4,
Nora 5, Hazel 4, Violet 4, Stella 4, Lucy 5, Penelope 3, Savannah 4, Leah 5, Naomi 5
""",
    family="""
Smith 828, Johnson 655, Williams 550, Brown 487, Jones 483, Miller 393, Davis 380,
Wilson 272, Anderson 262, Thomas 260, Taylor 256, Moore 242, Jackson 240, Martin 237,
Lee 234, Thompson 225, White 224, Harris 212, Clark 190, Lewis 180, Robinson 179,
Walker 172, Young 163, Allen 162, King 157, Wright 156, Scott 151, Hill 148, Green 147,
Adams 146, Nelson 143, Baker 143, Hall 140, Campbell 132, Mitchell 132, Carter 129,
Roberts 129, Phillips 118, Evans 117, Turner 115, Parker 112, Collins 105, Edwards 105,
Stewart 104, Morris 101, Cook 97, Rogers 96, Morgan 88, Peterson 87, Cooper 87, Reed 86,
Bailey 85, Bell 84, Howard 80, Ward 79, Cox 78, Richardson 78, Wood 76, Watson 75,
Brooks 75, Bennett 74, Gray 73, James 73, Hughes 71, Price 71, Sanders 71, Myers 70,
Long 69, Ross 69, Foster 69, Powell 67, Jenkins 67, Perry 66, Russell 65, Butler 64,
Barnes 63, Fisher 62, Henderson 62, Coleman 62, Simmons 61, Patterson 61, Jordan 61,
Reynolds 60, Hamilton 58, Graham 57, Wallace 55, West 54, Cole 54, Hayes 54, Bryant 53,
Ellis 52, Stevens 52, Murray 51, Ford 51, Marshall 50, Owens 50, Harrison 49, Gibson 49,
McDonald 49, Wells 48, Robertson 47, Dixon 45, Black 45, Daniels 44, Palmer 44, Mills 44,
Grant 42, Knight 41, Ferguson 41, Rose 40, Stone 40, Hawkins 40, Dunn 39, Perkins 39,
Hudson 39, Spencer 38, Gardner 38, Stephens 38, Payne 38, Pierce 37, Berry 37,
Matthews 37, Arnold 37, Willis 36, Ray 36, Watkins 36, Olson 36, Carroll 35, Duncan 35,
Snyder 35, Hart 35, Cunningham 34, Bradley 34, Lane 34, Andrews 34, Harper 33, Fox 33,
Riley 33, Armstrong 33, Carpenter 33, Weaver 33, Greene 33, Lawrence 33, Elliott 32,
Sims 32, Austin 32, Peters 32, Kelley 32, Franklin 32, Lawson 31, Fields 31, Carr 30,
Washington 30, Tucker 30, Porter 30, Hunter 30, Hicks 30, Crawford 30, Henry 30, Boyd 30,
Mason 30, Webb 29, Freeman 28, Warren 28, Dean 28, Rice 28, Holmes 27, Gordon 27,
Shaw 27, Banks 25, Vaughn 12, Whitaker 10, Smyth 5, St. John 3,
Barker 24, Fleming 24, Chapman 24, Burton 23, Douglas 23, Oliver 22, Montgomery 22,
Richards 22, Williamson 22, Johnston 22, Bishop 21, Little 21, Hopkins 21, Lynch 21,
Fowler 20, Howell 20, Lowe 20, Newman 19, Garrett 19, Holland 19, Curtis 19, Burke 19,
Harvey 19, Sutton 18, Wheeler 18, Lucas 18, Walters 18, Pearson 18, Caldwell 18,
Lambert 17, Bowman 17, Barrett 17, Haynes 17, Sherman 16, Chambers 16, Norris 16,
Gilbert 16, Byrd 16, Benson 16, Frazier 15, Woods 15, Howe 15, Jennings 15, Dawson 15,
Schultz 15, Hale 15, Reeves 15, Griffin 15, Bates 14, Wade 14, Stanley 14, Manning 14,
Goodwin 14, Norton 14, Horton 14, Moss 14, Pope 13, Blake 13, Parsons 13, Sharp 13,
Ingram 13, Pratt 13, Hardy 13, Floyd 12, Holt 12, Lyons 12, Tate 12, Saunders 12,
Hampton 12, Mann 12, Weber 12, Baldwin 12, Copeland 11, Brewer 11, Clayton 11, Potter 11,
Lamb 11, Sweeney 11, McKinney 11, McKenzie 10, McGee 10, Bradford 10, Cannon 10,
Wolfe 10, Dalton 10, Combs 10, Whitfield 9, Middleton 9, Conrad 9, Pruitt 9, Ashworth 7,
Thornton 9, Kirby 9, Hoover 9, Booker 9, Merritt 8, Ellison 8, Calloway 8, Winslow 6,
Pendleton 6, Hargrove 6, Blackwell 7, Lockhart 6, Fairchild 5, Kingsley 5, Prescott 5,
Radcliffe 4, Thackeray 3, Worthington 4, Underwood 8, Whitley 6, Hollis 6, Goodman 9,
Spears 8, Kemp 7, Rowe 9, Beck 10, Fuller 11, Greer 8, Cash 6, Hatfield 5, Ballard 8
""",
    accent_rate=0.15,
    male_middle="""
Lee 40, Allen 30, Wayne 25, James 40, Edward 25, Joseph 30, Michael 35, Paul 25, Scott 20,
Alan 20, Dean 12, Ray 15, Thomas 25, William 25, John 30, David 25, Robert 20, Andrew 15,
Charles 15, Eugene 8, Henry 10, Christopher 12, Daniel 12, Matthew 10, Ryan 8, Alexander 10
""",
    female_middle="""
Ann 50, Marie 50, Lynn 40, Elizabeth 45, Jean 25, Louise 20, Rose 25, Mae 15, Grace 20,
Nicole 20, Michelle 20, Renee 15, Kay 12, Sue 10, Jane 15, Anne 25, Leigh 8, Dawn 10,
Christine 12, Diane 10, Catherine 10, Frances 8, Joy 10
""",
)

IRISH = Group(
    male="""
Patrick 40, Sean 30, Brendan 15, Liam 20, Connor 20, Declan 8, Kieran 6, Ciaran 4, Eoin 3,
Padraig 2, Seamus 3, Niall 4, Cormac 2, Michael 40, John 40, James 30, Kevin 20, Brian 20,
Thomas 20, Aidan 10, Eamon 3, Dennis 10, Francis 8
""",
    female="""
Mary 40, Siobhan 8, Aoife 5, Niamh 5, Saoirse 4, Caitlin 12, Ciara 6, Bridget 8, Maeve 6,
Sinead 5, Fiona 8, Colleen 10, Kathleen 15, Erin 20, Shannon 15, Maureen 12, Eileen 10,
Margaret 20, Nora 8, Deirdre 4, Roisin 2, Orla 3, Molly 10, Sheila 8
""",
    family="""
Murphy 98, Kelly 80, Sullivan 64, O'Brien 30, O'Connor 22, O'Neill 20, O'Sullivan 8,
O'Reilly 10, O'Donnell 10, O'Malley 6, O'Leary 6, O'Hara 8, McCarthy 25, McLaughlin 12,
McGrath 8, McCormick 10, McKenna 6, McMahon 8, McNamara 7, McGuire 10, MacDonald 8,
McDonald 20, Walsh 25, Byrne 10, Ryan 31, Doyle 15, Brennan 12, Quinn 15, Flanagan 8,
Gallagher 12, Fitzgerald 15, Fitzpatrick 10, Kavanagh 5, Nolan 12, Keane 5, Duffy 8,
Dunne 4, Connolly 10, Callahan 10, Regan 5, Hennessy 4, Donovan 10, Moriarty 3,
Sheehan 5, Devlin 4, Kennedy 48, Burke 20, Higgins 15, Brady 12
""",
    accent_rate=0.0,
)

HISPANIC = Group(
    male="""
Jose 75, Juan 65, Luis 55, Carlos 70, Jesus 45, Miguel 55, Antonio 45, Jorge 40,
Francisco 40, Alejandro 35, Pedro 30, Manuel 35, Ricardo 25, Roberto 25, Fernando 25,
Javier 30, Eduardo 25, Rafael 25, Mario 22, Sergio 20, Daniel 25, Angel 25, Victor 22,
Diego 22, Raul 18, Oscar 18, Ramon 15, Enrique 15, Arturo 14, Hector 15, Guillermo 12,
Alberto 14, Andres 12, Gerardo 12, Ruben 12, Ignacio 8, Santiago 10, Mateo 10, Emiliano 6,
Joaquin 6, Adrian 12, Cristian 10, Julio 12, Rodrigo 8, Gustavo 8, Armando 10, Alfredo 8,
Felipe 8, Salvador 8, Cesar 10, Ivan 8, Martin 8, Sebastian 8, Julian 6, Efrain 4,
Juan Carlos 10, Jose Luis 12, Jose Antonio 6, Luis Miguel 4
""",
    female="""
Maria 70, Guadalupe 30, Ana 40, Rosa 30, Carmen 35, Juana 15, Sofia 25, Isabella 15,
Camila 18, Valentina 15, Lucia 15, Gabriela 20, Daniela 20, Mariana 15, Alejandra 18,
Veronica 18, Adriana 15, Claudia 18, Patricia 20, Elena 18, Laura 15, Leticia 12,
Martha 14, Yolanda 12, Silvia 12, Teresa 14, Sandra 15, Monica 15, Norma 12, Araceli 8,
Beatriz 8, Dolores 8, Esperanza 6, Josefina 8, Margarita 10, Ximena 8, Natalia 12,
Paola 10, Fernanda 10, Marisol 8, Luz 10, Alma 8, Yesenia 8, Xochitl 3, Itzel 4, Jimena 6,
Rocio 6, Ines 4, Belen 3, Maria Jose 6, Maria Guadalupe 10, Ana Maria 6, Maria Elena 8,
Maria de los Angeles 2
""",
    family="""
Garcia 470, Rodriguez 440, Martinez 430, Hernandez 420, Lopez 350, Gonzalez 340,
Perez 275, Sanchez 245, Ramirez 225, Torres 180, Flores 175, Rivera 165, Gomez 150,
Diaz 145, Cruz 120, Reyes 120, Morales 115, Gutierrez 110, Ortiz 105, Chavez 100,
Ramos 100, Ruiz 95, Alvarez 95, Mendoza 90, Castillo 85, Jimenez 85, Moreno 85,
Romero 80, Herrera 80, Medina 75, Aguilar 75, Vargas 70, Castro 70, Guzman 60,
Fernandez 60, Juarez 55, Munoz 55, Mendez 55, Salazar 50, Soto 50, Delgado 50, Pena 50,
Rios 50, Alvarado 50, Sandoval 45, Contreras 45, Valdez 45, Guerrero 45, Ortega 45,
Estrada 40, Nunez 40, Vasquez 40, Vazquez 40, Dominguez 35, Espinoza 35, Marquez 35,
Santiago 30, Cabrera 30, Acosta 30, Rojas 30, Navarro 30, Fuentes 25, Padilla 25,
Ibarra 25, Cervantes 20, Velasquez 20, Ochoa 15, Zamora 15, Villanueva 15, Quintero 10,
Ibanez 8, de la Cruz 25, de la Rosa 12, del Rio 8, de Leon 15, de Jesus 12,
de los Santos 8, dos Santos 6, da Silva 8, Serrano 14, Molina 20, Lara 14, Campos 16,
Vega 20, Cortez 14, Miranda 14, Salinas 12, Trujillo 10, Luna 14, Pacheco 12, Avila 12,
Rosales 12, Montoya 12, Maldonado 14, Cardenas 10, Orozco 10, Barrera 10, Bautista 8,
Galvan 8, Villarreal 10, Tapia 6, Zuniga 6, Solis 10, Benitez 8, Arroyo 8, Duarte 8,
Esparza 6, Escobar 8, Figueroa 10, Gallegos 8, Becerra 6, Mejia 10, Palacios 6, Pineda 8,
Quiroz 6, Rangel 6, Sosa 8, Vallejo 4, Zapata 6, Arellano 6, Carrillo 8, Cisneros 6,
Lozano 8, Macias 6, Meza 6, Nava 6, Olivares 4, Paredes 4, Peralta 4, Robles 8, Velez 6,
Vela 4, Toledo 4, Alonso 4, Mora 8, Osorio 4, Jaramillo 4, Beltran 6, Caballero 4
""",
    accent_rate=0.35,
    middle_rate=0.45,
)

VIETNAMESE = Group(
    male="""
Minh 20, Tuan 15, Hung 15, Dung 10, Thanh 15, Nam 12, Long 10, Khoa 8, Huy 12, Duc 10,
Quang 10, Phuc 8, Bao 10, Vinh 8, Trung 8, Son 8, Hai 8, Tam 6, Kevin 10, Peter 6, David 6
""",
    female="""
Linh 15, Huong 12, Thao 12, Lan 12, Mai 12, Trang 12, Ngoc 12, Hoa 10, Anh 15, Phuong 12,
Thuy 12, Hanh 8, Nhung 6, Hien 8, Vy 10, Tien 6, Kim 10, Tram 6, My 6, Nga 6,
Jennifer 8, Tina 6, Vivian 6
""",
    family="""
Nguyen 380, Tran 110, Le 90, Pham 70, Hoang 25, Huynh 40, Phan 25, Vu 25, Vo 30,
Dang 20, Bui 20, Do 20, Ho 20, Ngo 15, Duong 12, Ly 12, Truong 20, Dinh 12, Lam 12,
Mai 8, Cao 6
""",
    accent_rate=0.3,
    male_middle="Van 50, Duc 10, Minh 10, Quoc 8, Huu 8, Thanh 8",
    female_middle="Thi 60, Ngoc 10, Thu 8, Kim 6, Thanh 6",
    middle_rate=0.7,
)

CHINESE = Group(
    male="""
Wei 15, Jun 10, Hao 8, Jian 8, Ming 10, Lei 6, Yi 6, Kevin 15, Jason 12, Eric 12, David 12,
Michael 10, Andrew 8, Tony 6, Jimmy 5, Vincent 6
""",
    female="""
Li 8, Mei 10, Xin 8, Ying 8, Jing 10, Yan 8, Hui 6, Fang 6, Lin 6, Amy 12, Grace 10,
Jennifer 10, Michelle 10, Emily 10, Helen 8, Angela 8, Vivian 8, Cindy 6
""",
    family="""
Chen 45, Wang 40, Li 40, Lee 40, Zhang 35, Liu 30, Wong 30, Yang 20, Huang 20, Wu 20,
Lin 20, Chan 20, Zhao 12, Zhou 12, Xu 10, Sun 8, Ma 8, Zhu 8, Hu 8, Yu 8, Tang 8,
Cheung 8, Leung 8, Ng 8, Guo 6, He 6, Chow 6, Lau 6
""",
    middle_rate=0.2,
)

INDIAN = Group(
    male="""
Raj 15, Rahul 15, Amit 15, Vijay 10, Sanjay 12, Rajesh 12, Suresh 10, Ramesh 8, Arjun 12,
Rohan 10, Aarav 8, Vikram 8, Anil 8, Sunil 8, Krishna 8, Ravi 10, Deepak 8, Manish 6,
Nikhil 8, Pranav 6, Siddharth 6, Ashok 6, Gurpreet 4, Karthik 6
""",
    female="""
Priya 15, Anjali 10, Pooja 10, Neha 10, Sunita 8, Lakshmi 8, Deepa 8, Kavya 6, Ananya 8,
Divya 8, Meera 6, Sita 4, Asha 6, Swati 6, Shreya 6, Aditi 6, Nisha 8, Rekha 6, Geeta 5,
Padma 4, Simran 5, Harpreet 4
""",
    family="""
Patel 120, Singh 70, Kumar 50, Shah 40, Sharma 40, Gupta 30, Reddy 30, Rao 20, Desai 20,
Mehta 20, Khan 20, Joshi 15, Nair 15, Iyer 12, Das 12, Menon 10, Agarwal 10, Bhatt 10,
Chaudhary 10, Verma 10, Jain 10, Pillai 8, Chopra 8, Kapoor 8, Malhotra 8, Banerjee 8,
Mukherjee 8, Mishra 8, Krishnan 8, Srinivasan 8, Chatterjee 6, Subramanian 6, Naidu 5,
Thakkar 5, Trivedi 5
""",
    middle_rate=0.3,
)

ARABIC = Group(
    male="""
Mohammed 40, Muhammad 20, Mohamed 15, Ahmed 25, Ali 25, Omar 20, Hassan 15, Hussein 10,
Khalid 10, Ibrahim 10, Yusuf 10, Youssef 8, Mahmoud 8, Mustafa 8, Karim 8, Tariq 6,
Samir 8, Ziad 6, Bilal 6, Hamza 6, Adam 8, Jamal 6, Rami 6, Fadi 5, Nabil 5
""",
    female="""
Fatima 25, Aisha 15, Mariam 15, Maryam 10, Layla 12, Nour 10, Noor 10, Zainab 10, Sara 12,
Yasmin 10, Hana 8, Amira 8, Rania 6, Lina 8, Huda 5, Salma 6, Samira 6, Leila 6, Reem 5,
Dina 6, Rana 5
""",
    family="""
Ahmed 30, Ali 30, Hassan 25, Mohamed 20, Hussein 15, Mohammed 15, Ibrahim 15, Haddad 12,
Khalil 10, Saleh 10, Khoury 10, Abdullah 10, Mansour 8, Nasser 8, Aziz 8, Al-Sayed 8,
Farah 8, Said 8, Saad 8, Hammoud 8, Hamdan 6, Jaber 6, Qureshi 6, Bazzi 6, Beydoun 6,
Al-Amin 5, Abdel-Rahman 5, Darwish 5, El-Amin 4, Fawaz 4, Chami 4, Al Hassan 3
""",
    middle_rate=0.35,
)

SLAVIC = Group(
    male="""
Piotr 10, Pawel 8, Tomasz 8, Krzysztof 6, Andrzej 6, Lukasz 6, Jan 8, Marek 8, Jakub 6,
Dmitri 8, Sergei 10, Alexei 6, Ivan 10, Vladimir 8, Nikolai 6, Mikhail 6, Oleg 5, Yuri 6,
Viktor 6, Milan 5, Stefan 6, Bogdan 4, Taras 3
""",
    female="""
Anna 15, Katarzyna 8, Agnieszka 6, Magdalena 6, Malgorzata 5, Olga 10, Natalia 10,
Svetlana 8, Irina 8, Tatiana 8, Elena 8, Yelena 5, Ekaterina 6, Oksana 6, Ludmila 5,
Marta 6, Ewa 5, Zofia 5, Milena 5, Jelena 5, Daria 5, Anastasia 8, Nadia 5
""",
    family="""
Nowak 25, Kowalski 20, Ivanov 15, Novak 15, Wisniewski 12, Wojcik 10, Kowalczyk 10,
Kaminski 10, Lewandowski 10, Petrov 10, Zielinski 8, Szymanski 8, Wozniak 8, Smirnov 8,
Novotny 8, Shevchenko 8, Kuznetsov 6, Popov 6, Dvorak 6, Horvat 6, Kovac 6, Kovalenko 6,
Melnyk 6, Petrovic 6, Jovanovic 6, Sokolov 5, Volkov 5, Bondarenko 5, Nikolic 5,
Markovic 5, Tkachenko 4
""",
    accent_rate=0.4,
    middle_rate=0.3,
)

GERMANIC = Group(
    male="""
Hans 6, Klaus 4, Stefan 6, Jurgen 3, Lukas 8, Felix 6, Maximilian 5, Erik 10, Lars 6,
Nils 4, Sven 4, Bjorn 3, Jan 6, Pieter 3, Dirk 3, Karl 8, Otto 3, Soren 3, Anders 4
""",
    female="""
Anna 10, Greta 5, Ingrid 5, Heidi 6, Hannah 8, Lena 8, Sabine 4, Ursula 3, Katrin 4,
Astrid 3, Freya 4, Sigrid 2, Liesel 2, Mia 6, Emma 8, Sofie 4, Annika 4, Britta 2
""",
    family="""
Schmidt 20, Muller 15, Meyer 15, Wagner 15, Olson 15, Mueller 12, Schneider 12,
Fischer 12, Weber 12, Becker 12, Larson 12, Hansen 12, Hoffmann 10, Koch 10, Klein 10,
Wolf 10, Jensen 10, Schulz 8, Braun 8, Nielsen 8, Jansen 6, Krause 6, Sorensen 6,
van der Berg 6, Van Dyke 6, Schroder 5, Zimmermann 5, Kruger 5, Hartmann 5, Lange 5,
Werner 5, de Vries 5, Johansson 5, Schafer 4, Kohler 4, Bakker 4, van den Broek 3,
Van Buren 3, Van Houten 3, Visser 3, Lindqvist 3, Gustafsson 3, von Braun 2, Bjork 2
""",
    accent_rate=0.3,
    middle_rate=0.5,
)

ROMANCE = Group(
    male="""
Antonio 8, Marco 8, Giovanni 6, Luca 6, Matteo 6, Salvatore 6, Pierre 6, Jean 6, Andre 6,
Giuseppe 5, Francesco 5, Vincenzo 4, Francois 4, Jacques 4, Michel 4, Jean-Pierre 3,
Luc 3, Julien 3, Mathieu 3, Noel 3, Jerome 3, Jean-Luc 2
""",
    female="""
Marie 8, Francesca 6, Giulia 6, Rosa 6, Angela 6, Gina 6, Sofia 6, Chloe 6, Zoe 6,
Renee 5, Isabelle 5, Chiara 4, Giovanna 4, Helene 4, Celine 4, Amelie 4, Camille 4,
Anne-Marie 3, Juliette 3, Genevieve 3, Marie-Claire 2, Noemie 2
""",
    family="""
Russo 12, Romano 10, Esposito 10, Marino 10, Bruno 10, Leblanc 10, Ricci 8, De Luca 8,
D'Angelo 8, Costa 8, Giordano 8, Greco 8, Gallo 8, Rizzo 8, Roy 8, Conti 6, Mancini 6,
Lombardi 6, Colombo 6, Dubois 6, Lambert 6, Boucher 6, Gagnon 6, Hebert 6, Bianchi 5,
Moretti 5, Girard 5, Bouchard 5, Cote 5, Pelletier 5, Di Stefano 4, DeMarco 4,
Lefebvre 4, Moreau 4, Fontaine 4, Dupont 4, Theriault 4, DiMaggio 3, LaRosa 3,
St. Pierre 3, La Rosa 2, Saint-Pierre 2
""",
    accent_rate=0.4,
    middle_rate=0.5,
)

WEST_AFRICAN = Group(
    male="""
Chinedu 5, Emeka 5, Oluwaseun 4, Kwame 5, Kofi 5, Yaw 3, Mamadou 5, Ibrahima 4, Tunde 4,
Chukwuemeka 3, Obinna 3, Samuel 6, Emmanuel 6, Daniel 4
""",
    female="""
Ngozi 5, Chioma 5, Adaeze 3, Amara 4, Abena 4, Akosua 3, Fatoumata 5, Aminata 5,
Funmilayo 3, Yetunde 3, Folake 3, Grace 6, Blessing 5, Esther 4
""",
    family="""
Okafor 6, Okonkwo 5, Adeyemi 5, Adebayo 5, Mensah 6, Owusu 5, Boateng 5, Diallo 8,
Traore 5, Kamara 5, Olawale 3, Eze 4, Nwosu 4, Obi 4, Asante 4, Conteh 3, Kone 4,
Ogunleye 3, Achebe 2
""",
    middle_rate=0.4,
)

GROUPS: dict[str, Group] = {
    "anglo": ANGLO,
    "irish": IRISH,
    "hispanic": HISPANIC,
    "vietnamese": VIETNAMESE,
    "chinese": CHINESE,
    "indian": INDIAN,
    "arabic": ARABIC,
    "slavic": SLAVIC,
    "germanic": GERMANIC,
    "romance": ROMANCE,
    "west_african": WEST_AFRICAN,
}

# Accented spellings a record may carry. Applied per whole word ("Jose Luis" -> "José Luis").
ACCENTED: dict[str, str] = {
    # Spanish / Portuguese
    "Jose": "José", "Jesus": "Jesús", "Ramon": "Ramón", "Raul": "Raúl", "Angel": "Ángel",
    "Hector": "Héctor", "Victor": "Víctor", "Andres": "Andrés", "Joaquin": "Joaquín",
    "Adrian": "Adrián", "Ruben": "Rubén", "Maria": "María", "Lucia": "Lucía", "Sofia": "Sofía",
    "Veronica": "Verónica", "Monica": "Mónica", "Ines": "Inés", "Martin": "Martín",
    "Cesar": "César", "Julian": "Julián", "Sebastian": "Sebastián", "Ivan": "Iván",
    "Efrain": "Efraín", "Rocio": "Rocío", "Belen": "Belén", "Angeles": "Ángeles",
    "Garcia": "García", "Rodriguez": "Rodríguez", "Martinez": "Martínez",
    "Hernandez": "Hernández", "Lopez": "López", "Gonzalez": "González", "Perez": "Pérez",
    "Sanchez": "Sánchez", "Ramirez": "Ramírez", "Gomez": "Gómez", "Diaz": "Díaz",
    "Gutierrez": "Gutiérrez", "Alvarez": "Álvarez", "Jimenez": "Jiménez",
    "Fernandez": "Fernández", "Juarez": "Juárez", "Munoz": "Muñoz", "Mendez": "Méndez",
    "Pena": "Peña", "Rios": "Ríos", "Nunez": "Núñez", "Vasquez": "Vásquez",
    "Vazquez": "Vázquez", "Dominguez": "Domínguez", "Marquez": "Márquez",
    "Velasquez": "Velásquez", "Ibanez": "Ibáñez", "Guzman": "Guzmán", "Leon": "León",
    "Rio": "Río",
    # Vietnamese
    "Nguyen": "Nguyễn", "Tran": "Trần", "Le": "Lê", "Pham": "Phạm", "Hoang": "Hoàng",
    "Huynh": "Huỳnh", "Vu": "Vũ", "Vo": "Võ", "Dang": "Đặng", "Bui": "Bùi", "Do": "Đỗ",
    "Ho": "Hồ", "Ngo": "Ngô", "Duong": "Dương", "Ly": "Lý", "Truong": "Trương", "Dinh": "Đinh",
    "Lam": "Lâm", "Tuan": "Tuấn", "Hung": "Hùng", "Dung": "Dũng", "Duc": "Đức", "Phuc": "Phúc",
    "Bao": "Bảo", "Son": "Sơn", "Hai": "Hải", "Tam": "Tâm", "Huong": "Hương", "Thao": "Thảo",
    "Ngoc": "Ngọc", "Phuong": "Phương", "Thuy": "Thủy", "Hanh": "Hạnh", "Hien": "Hiền",
    "Tien": "Tiên", "Tram": "Trâm", "Van": "Văn", "Thi": "Thị", "Quoc": "Quốc", "Huu": "Hữu",
    # Slavic
    "Pawel": "Paweł", "Lukasz": "Łukasz", "Malgorzata": "Małgorzata",
    "Wisniewski": "Wiśniewski", "Wojcik": "Wójcik", "Zielinski": "Zieliński",
    "Szymanski": "Szymański", "Wozniak": "Woźniak", "Kaminski": "Kamiński",
    "Dvorak": "Dvořák", "Novotny": "Novotný", "Kovac": "Kovač", "Petrovic": "Petrović",
    "Jovanovic": "Jovanović", "Nikolic": "Nikolić", "Markovic": "Marković",
    # Germanic / Nordic
    "Muller": "Müller", "Schroder": "Schröder", "Schafer": "Schäfer", "Kruger": "Krüger",
    "Kohler": "Köhler", "Bjork": "Björk", "Sorensen": "Sørensen", "Jurgen": "Jürgen",
    "Bjorn": "Björn", "Soren": "Søren",
    # French / Italian / English loans
    "Francois": "François", "Andre": "André", "Noel": "Noël", "Chloe": "Chloé", "Zoe": "Zoë",
    "Renee": "Renée", "Helene": "Hélène", "Celine": "Céline", "Amelie": "Amélie",
    "Genevieve": "Geneviève", "Noemie": "Noémie", "Jerome": "Jérôme", "Hebert": "Hébert",
    "Theriault": "Thériault", "Cote": "Côté",
}  # fmt: skip

# Formal given name -> nicknames people go by (and front desks write down).
NICKNAMES: dict[str, tuple[str, ...]] = {
    "William": ("Bill", "Will", "Billy", "Willie"),
    "Robert": ("Bob", "Rob", "Bobby", "Robbie"),
    "Richard": ("Dick", "Rick", "Rich", "Ricky"),
    "James": ("Jim", "Jimmy", "Jamie"),
    "John": ("Jack", "Johnny"),
    "Joseph": ("Joe", "Joey"),
    "Michael": ("Mike", "Mikey"),
    "Thomas": ("Tom", "Tommy"),
    "Charles": ("Charlie", "Chuck"),
    "Christopher": ("Chris",),
    "Daniel": ("Dan", "Danny"),
    "Matthew": ("Matt",),
    "Anthony": ("Tony",),
    "Donald": ("Don", "Donnie"),
    "Steven": ("Steve",),
    "Stephen": ("Steve",),
    "Andrew": ("Andy", "Drew"),
    "Kenneth": ("Ken", "Kenny"),
    "Edward": ("Ed", "Eddie", "Ted"),
    "Timothy": ("Tim",),
    "Ronald": ("Ron", "Ronnie"),
    "Jeffrey": ("Jeff",),
    "Gregory": ("Greg",),
    "Alexander": ("Alex",),
    "Benjamin": ("Ben",),
    "Samuel": ("Sam",),
    "Nicholas": ("Nick",),
    "Jonathan": ("Jon",),
    "Lawrence": ("Larry",),
    "Gerald": ("Jerry",),
    "Raymond": ("Ray",),
    "Patrick": ("Pat",),
    "Henry": ("Hank",),
    "Theodore": ("Ted", "Teddy", "Theo"),
    "Zachary": ("Zach",),
    "Douglas": ("Doug",),
    "Peter": ("Pete",),
    "Walter": ("Walt",),
    "Gabriel": ("Gabe",),
    "Philip": ("Phil",),
    "Nathan": ("Nate",),
    "Jacob": ("Jake",),
    "Joshua": ("Josh",),
    "Eugene": ("Gene",),
    "Albert": ("Al", "Bert"),
    "Vincent": ("Vince",),
    "Elizabeth": ("Liz", "Beth", "Betsy", "Lizzie", "Betty"),
    "Margaret": ("Peggy", "Maggie", "Meg"),
    "Katherine": ("Kate", "Katie", "Kathy"),
    "Catherine": ("Cathy", "Kate"),
    "Kathleen": ("Kathy",),
    "Patricia": ("Pat", "Patty", "Trish"),
    "Jennifer": ("Jen", "Jenny"),
    "Susan": ("Sue", "Susie"),
    "Deborah": ("Debbie", "Deb"),
    "Rebecca": ("Becky",),
    "Barbara": ("Barb",),
    "Dorothy": ("Dot", "Dottie"),
    "Pamela": ("Pam",),
    "Cynthia": ("Cindy",),
    "Christina": ("Tina",),
    "Jessica": ("Jess", "Jessie"),
    "Samantha": ("Sam",),
    "Victoria": ("Vicky", "Tori"),
    "Abigail": ("Abby",),
    "Judith": ("Judy",),
    "Theresa": ("Terri", "Tess"),
    "Frances": ("Fran",),
    "Virginia": ("Ginny",),
    "Kimberly": ("Kim",),
    "Amanda": ("Mandy",),
    "Melissa": ("Missy",),
    "Jacqueline": ("Jackie",),
    "Sandra": ("Sandy",),
    "Eleanor": ("Ellie",),
    # Outside English: common at US front desks, not in every nickname table.
    "Francisco": ("Paco", "Pancho"),
    "Jose": ("Pepe",),
    "Guadalupe": ("Lupe",),
    "Roberto": ("Beto",),
    "Eduardo": ("Lalo",),
    "Ignacio": ("Nacho",),
    "Alejandro": ("Alex",),
    "Natalia": ("Natasha",),
    "Tatiana": ("Tanya",),
    "Ekaterina": ("Katya",),
    "Giuseppe": ("Joe",),
}


# Common ZIP prefixes, phone area codes and the naming mix of a clinic's catchment area.
@dataclass(frozen=True)
class ClinicProfile:
    city: str
    zips: tuple[str, ...]
    area_codes: tuple[str, ...]
    mix: str  # "group weight, ..."


CLINIC_PROFILES: tuple[ClinicProfile, ...] = (
    ClinicProfile(
        city="Chicago",
        zips=("60614", "60618", "60625", "60640", "60647", "60608", "60629", "60657"),
        area_codes=("312", "773", "872", "708", "847"),
        mix="anglo 48, hispanic 24, irish 6, slavic 8, indian 4, arabic 3, chinese 2, "
        "vietnamese 1, germanic 2, romance 1, west_african 1",
    ),
    ClinicProfile(
        city="Houston",
        zips=("77002", "77036", "77057", "77072", "77081", "77099", "77449", "77494"),
        area_codes=("713", "281", "832", "346"),
        mix="hispanic 42, anglo 38, vietnamese 4, indian 5, arabic 4, west_african 3, "
        "chinese 2, irish 1, germanic 1",
    ),
    ClinicProfile(
        city="San Jose",
        zips=("95112", "95116", "95122", "95123", "95125", "95129", "95136", "95148"),
        area_codes=("408", "669", "650"),
        mix="anglo 30, hispanic 28, vietnamese 12, chinese 11, indian 12, slavic 2, "
        "germanic 1, romance 1, arabic 1",
    ),
    ClinicProfile(
        city="Boston",
        zips=("02108", "02116", "02124", "02128", "02130", "02135", "02139", "02145"),
        area_codes=("617", "857", "781", "508"),
        mix="anglo 42, irish 18, romance 10, hispanic 12, chinese 6, vietnamese 3, "
        "west_african 4, indian 3, slavic 2",
    ),
    ClinicProfile(
        city="Dearborn",
        zips=("48120", "48124", "48126", "48128", "48201", "48209", "48219", "48228"),
        area_codes=("313", "248", "734", "586"),
        mix="anglo 40, arabic 30, slavic 8, hispanic 8, irish 3, germanic 4, indian 3, "
        "romance 2, west_african 2",
    ),
)

# Area codes for people whose number is from elsewhere (moved, kept their mobile).
_OTHER_AREA_CODES = """
201 202 203 205 206 207 208 209 210 212 213 214 215 216 217 218 219 224 225 228 229 231
234 239 240 248 251 252 253 254 256 260 262 267 269 270 276 301 302 303 304 305 307 308
309 310 313 314 315 316 317 318 319 320 321 323 330 334 336 337 347 352 360 361 385 386
401 402 404 405 406 407 409 410 412 413 414 415 417 419 423 425 430 432 434 435 440 443
469 470 478 479 480 484 501 502 503 504 505 507 509 510 512 513 515 516 517 518 520 530
540 541 551 559 561 562 563 567 570 571 573 574 580 585 586 601 602 603 605 606 607 608
609 610 612 614 615 616 618 619 620 623 626 630 631 636 641 646 651 660 661 662 678 682
701 702 703 704 706 707 712 714 715 716 717 718 719 720 724 727 731 732 734 740 754 757
760 763 765 770 772 774 775 779 781 785 786 801 802 803 804 805 806 808 810 812 813 814
815 816 817 818 828 830 831 843 845 847 848 850 856 857 858 859 860 862 863 864 865 870
901 903 904 906 907 908 909 910 912 913 914 915 916 917 918 919 920 925 928 931 936 937
940 941 947 949 951 952 954 956 959 970 971 972 973 978 979 980 985 989
"""
OTHER_AREA_CODES: tuple[str, ...] = tuple(_OTHER_AREA_CODES.split())

# Reserved example domains (RFC 2606): realistic shapes, no real mailbox.
EMAIL_DOMAINS: tuple[tuple[str, float], ...] = (
    ("example.com", 40.0),
    ("example.net", 20.0),
    ("example.org", 15.0),
    ("mail.example.com", 10.0),
    ("inbox.example.net", 8.0),
    ("family.example.org", 4.0),
    ("work.example.com", 3.0),
)
